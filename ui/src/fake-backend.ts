// An in-memory stand-in for the engine: lets the screens run in a plain
// browser (`npm run dev`) and in unit tests. It mimics the engine's shapes and
// its refusals, not its rules in depth; the real rules live in Rust.

import {
  EngineError,
  type Backend,
  type CartLine,
  type EngineChange,
  type PricedLine,
  type PrintOutcome,
  type ProductView,
  type Quote,
  type SaleView,
  type SetupDefaults,
  type ScanView,
  type ShiftReport,
  type ShiftView,
  type SlotStatus,
  type StaffView,
  type Status,
  type VatLine,
} from "./api";

const PRODUCTS: ProductView[] = [
  { product_id: "adult", name: "Adult", price: 1500, vat_bp: 550, admits: 1, requires_membership: false },
  { product_id: "reduced", name: "Reduced (students, 18-25, jobseekers)", price: 1000, vat_bp: 550, admits: 1, requires_membership: false },
  { product_id: "child", name: "Child under 18", price: 0, vat_bp: 550, admits: 1, requires_membership: false },
  { product_id: "family", name: "Family (2 adults + 2 children)", price: 4000, vat_bp: 550, admits: 4, requires_membership: false },
  { product_id: "member", name: "Member", price: 0, vat_bp: 550, admits: 1, requires_membership: true },
  { product_id: "audio-guide", name: "Audio guide", price: 500, vat_bp: 2000, admits: 0, requires_membership: false },
];

const STAFF: Record<string, StaffView> = {
  "1111": { name: "Camille", role: "cashier" },
  "2222": { name: "Hugo", role: "cashier" },
  "9999": { name: "Inès", role: "supervisor" },
};

function split(gross: number, bp: number) {
  const net = Math.round((gross * 10000) / (10000 + bp));
  return { gross, net, tax: gross - net };
}

function fail(code: string, message: string): never {
  throw new EngineError(code, message);
}

export interface FakeOptions {
  enrolled?: boolean;
  online?: boolean;
  /** Milliseconds each call takes, to see loading states in a browser. */
  latencyMs?: number;
  /** What `setupDefaults` answers, when (tests: an answer arriving late). */
  defaults?: Promise<SetupDefaults>;
}

export class FakeBackend implements Backend {
  enrolled: boolean;
  online: boolean;
  latencyMs: number;
  printer = "none";
  deviceName = "Counter 1";
  shift: ShiftView | null = null;
  sales: SaleView[] = [];
  uploadedUpTo = 0;
  lastSyncAt: string | null = null;
  redeemed = new Map<string, string>();
  admittedToday = 0;
  slots: SlotStatus[];
  revoked: string[] = [];
  needsSupervisor = 0;
  defaults: Promise<SetupDefaults> | null;

  constructor(opts: FakeOptions = {}) {
    this.enrolled = opts.enrolled ?? true;
    this.online = opts.online ?? true;
    this.latencyMs = opts.latencyMs ?? 0;
    this.defaults = opts.defaults ?? null;
    const day = new Date().toISOString().slice(0, 10);
    this.slots = [10, 10.5, 11, 11.5, 12].map((h, i) => {
      const hh = String(Math.floor(h)).padStart(2, "0");
      const mm = h % 1 ? "30" : "00";
      return {
        slot_id: `${day}T${hh}:${mm}`,
        label: `${hh}:${mm}`,
        starts_at: `${day}T${hh}:${mm}:00Z`,
        ends_at: `${day}T${hh}:${mm}:00Z`,
        capacity: 120,
        lease_left: 20,
        remaining: 120 - i * 7,
        as_of: new Date().toISOString(),
        closed: i === 0,
      };
    });
  }

  private listeners = new Set<(change: EngineChange) => void>();

  onEngineChange(listener: (change: EngineChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** What the engine does after each change; tests call it after changing
   * the fake's state behind the screens' back (a sale pushed from elsewhere). */
  emitChange(...changes: EngineChange[]) {
    for (const c of changes) for (const l of this.listeners) l(c);
  }

  private async delay() {
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
  }

  private requireEnrolled() {
    if (!this.enrolled) fail("not_enrolled", "This counter is not set up yet.");
  }

  private price(slotId: string, items: CartLine[]): Quote {
    const slot = this.slots.find((s) => s.slot_id === slotId) ?? fail("unknown_slot", "That time slot does not exist.");
    if (slot.closed) fail("slot_closed", `The ${slot.label} entry window is over.`);
    if (items.length === 0) fail("empty_cart", "The cart is empty.");
    const lines: PricedLine[] = items.map((i) => {
      const p = PRODUCTS.find((x) => x.product_id === i.product_id) ?? fail("unknown_product", `Unknown product ${i.product_id}.`);
      if (p.requires_membership && (i.membership_numbers?.length ?? 0) !== i.quantity)
        fail("membership_number", "Each member ticket needs a membership number.");
      return {
        product_id: p.product_id,
        name: p.name,
        quantity: i.quantity,
        unit_price: p.price,
        vat_bp: p.vat_bp,
        amounts: split(p.price * i.quantity, p.vat_bp),
        admits_each: p.admits,
        membership_numbers: i.membership_numbers,
      };
    });
    const admissions = lines.reduce((s, l) => s + l.admits_each * l.quantity, 0);
    if (admissions > slot.lease_left)
      fail("lease_exhausted", `This counter can sell only ${slot.lease_left} more places for ${slot.label}.`);
    const rates = [...new Set(lines.map((l) => l.vat_bp))].sort((a, b) => a - b);
    const vat: VatLine[] = rates.map((bp) => {
      const ls = lines.filter((l) => l.vat_bp === bp);
      const sum = (k: "gross" | "net" | "tax") => ls.reduce((s, l) => s + l.amounts[k], 0);
      return { rate_bp: bp, label: `${bp / 100} %`, amounts: { gross: sum("gross"), net: sum("net"), tax: sum("tax") } };
    });
    const total = lines.reduce((s, l) => s + l.amounts.gross, 0);
    return { lines, total, currency: "EUR", admissions, vat, lease_left: slot.lease_left };
  }

  private print(): PrintOutcome {
    if (this.printer === "none") return { status: "no_printer" };
    if (this.printer.startsWith("network:127.0.0.1:1")) return { status: "failed", message: "Printer did not answer." };
    return { status: "printed" };
  }

  async setupDefaults(): Promise<SetupDefaults> {
    if (this.defaults) return this.defaults;
    return { server_url: null, code: null, name: null, printer: null };
  }
  async isEnrolled() {
    await this.delay();
    return this.enrolled;
  }
  async enrol(serverUrl: string, code: string, name: string) {
    await this.delay();
    if (!/^https?:\/\//.test(serverUrl)) fail("bad_url", "The server address must start with http:// or https://.");
    if (code.trim().length < 4) fail("bad_code", "That enrolment code was not accepted by the server.");
    this.enrolled = true;
    this.deviceName = name;
    return this.status();
  }
  async status(): Promise<Status> {
    await this.delay();
    this.requireEnrolled();
    return {
      device_name: this.deviceName,
      role: "counter",
      museum: "Musée des Tessères",
      server_url: "http://127.0.0.1:8080",
      online: this.online,
      last_sync_at: this.lastSyncAt,
      last_sync_error: this.online ? null : "The server cannot be reached.",
      pending_sales: this.sales.filter((s) => !s.uploaded).length,
      pending_voids: 0,
      pending_shifts: 0,
      pending_scans: 0,
      needs_supervisor: this.needsSupervisor,
      shift: this.shift,
      printer: this.printer,
      now: new Date().toISOString(),
      time_zone: "Europe/Paris",
      live: this.online,
      poll_every_s: this.online ? 20 : 2,
    };
  }
  async products() {
    await this.delay();
    return PRODUCTS;
  }
  async slotsToday() {
    await this.delay();
    return this.slots.map((s) => ({ ...s }));
  }
  async quote(slotId: string, items: CartLine[]) {
    await this.delay();
    return this.price(slotId, items);
  }
  async login(pin: string) {
    await this.delay();
    // Counters hold cashiers' verifiers only (supervisors are checked by the server).
    const staff = STAFF[pin];
    if (!staff || staff.role !== "cashier") fail("bad_pin", "That PIN is not recognised.");
    return staff;
  }
  async openShift(pin: string, float: number) {
    await this.delay();
    const staff = STAFF[pin] ?? fail("bad_pin", "That PIN is not recognised.");
    if (this.shift) fail("shift_open", `A shift is already open (${this.shift.cashier}).`);
    this.shift = { shift_id: crypto.randomUUID(), cashier: staff.name, opened_at: new Date().toISOString(), float };
    this.emitChange("status");
    return this.shift;
  }
  async sell(request: import("./api").SaleRequest) {
    await this.delay();
    if (!this.shift) fail("no_shift", "Open a shift before selling.");
    const q = this.price(request.slot_id, request.items);
    const tendered = request.payment.method === "cash" ? request.payment.tendered : null;
    if (tendered !== null && tendered < q.total) fail("not_enough_cash", "The cash handed over is less than the total.");
    const slot = this.slots.find((s) => s.slot_id === request.slot_id)!;
    slot.lease_left -= q.admissions;
    slot.remaining -= q.admissions;
    const sale: SaleView = {
      sale_id: crypto.randomUUID(),
      terminal_seq: this.sales.length + 1,
      slot_id: request.slot_id,
      slot_label: slot.label,
      created_at: new Date().toISOString(),
      cashier: this.shift.cashier,
      lines: q.lines,
      total: q.total,
      currency: q.currency,
      admissions: q.admissions,
      vat: q.vat,
      payment_method: request.payment.method,
      tendered,
      change: tendered === null ? null : tendered - q.total,
      tickets: q.lines.flatMap((l) =>
        Array.from({ length: l.admits_each > 0 ? l.quantity : 0 }, () => ({
          ticket_id: crypto.randomUUID(),
          product_id: l.product_id,
          product_name: l.name,
          admits: l.admits_each,
          code: `T${Math.random().toString(36).slice(2, 12).toUpperCase()}`,
        })),
      ),
      voided: false,
      uploaded: false,
    };
    this.sales.push(sale);
    if (this.online) this.drain();
    this.emitChange("slots", "sales", "status");
    return { sale, printed: this.print() };
  }
  private drain() {
    for (const s of this.sales) s.uploaded = true;
    this.lastSyncAt = new Date().toISOString();
  }
  async salesToday() {
    await this.delay();
    return this.sales.map((s) => ({ ...s })).reverse();
  }
  async reprint(saleId: string) {
    await this.delay();
    if (!this.sales.some((s) => s.sale_id === saleId)) fail("unknown_sale", "No such sale.");
    return this.print();
  }
  async voidSale(saleId: string, supervisorPin: string, reason: string) {
    await this.delay();
    if (!this.online) fail("approval_needs_server", "A supervisor approval needs the server; try again when online. The sale stands.");
    const sup = STAFF[supervisorPin];
    if (!sup || sup.role !== "supervisor") fail("not_supervisor", "A supervisor's PIN is needed to void a sale.");
    if (!reason.trim()) fail("reason_required", "Say why the sale is voided.");
    const sale = this.sales.find((s) => s.sale_id === saleId) ?? fail("unknown_sale", "No such sale.");
    if (sale.voided) fail("already_voided", "This sale is already voided.");
    sale.voided = true;
    this.emitChange("slots", "sales", "status");
    return { sale_id: saleId, refund: sale.total, refund_method: sale.payment_method, returned_to_lease: true, approved_by: sup.name };
  }
  private report(kind: "x" | "z", counted: number | null): ShiftReport {
    const shift = this.shift ?? fail("no_shift", "No shift is open.");
    const live = this.sales.filter((s) => !s.voided);
    const cash = live.filter((s) => s.payment_method === "cash").reduce((a, s) => a + s.total, 0);
    const card = live.filter((s) => s.payment_method === "card").reduce((a, s) => a + s.total, 0);
    const expected = shift.float + cash;
    return {
      kind,
      shift_id: shift.shift_id,
      counter: this.deviceName,
      cashier: shift.cashier,
      opened_at: shift.opened_at,
      closed_at: kind === "z" ? new Date().toISOString() : null,
      printed_at: new Date().toISOString(),
      currency: "EUR",
      float: shift.float,
      sales_count: live.length,
      voids_count: this.sales.length - live.length,
      admissions: live.reduce((a, s) => a + s.admissions, 0),
      first_seq: this.sales[0]?.terminal_seq ?? null,
      last_seq: this.sales[this.sales.length - 1]?.terminal_seq ?? null,
      gross: cash + card,
      by_method: [
        { method: "cash", sales: cash, refunds: 0, net: cash },
        { method: "card", sales: card, refunds: 0, net: card },
      ],
      by_product: [],
      vat: [],
      expected_cash: expected,
      counted_cash: counted,
      over_short: counted === null ? null : counted - expected,
    };
  }
  async xReport() {
    await this.delay();
    return this.report("x", null);
  }
  async closeShift(counted: number) {
    await this.delay();
    const r = this.report("z", counted);
    this.shift = null;
    this.emitChange("status");
    return r;
  }
  async setPrinter(spec: string) {
    await this.delay();
    if (!/^(none|network:[^:]+:\d+|file:.+|usb:[0-9a-fA-F]{4}:[0-9a-fA-F]{4})$/.test(spec))
      fail("bad_printer", `Printer must be none, network:HOST:PORT, file:PATH or usb:VID:PID (got "${spec}").`);
    this.printer = spec;
  }
  async testPrint() {
    await this.delay();
    return this.print();
  }
  async syncNow() {
    await this.delay();
    if (!this.online) fail("offline", "The server cannot be reached.");
    const pending = this.sales.filter((s) => !s.uploaded).length;
    this.drain();
    this.emitChange("sales", "status");
    return { uploaded_sales: pending, acked_seq: this.sales.length, pending_sales: 0, leases_granted: 0, places_returned: 0 };
  }
  async scan(code: string): Promise<ScanView> {
    await this.delay();
    const base: ScanView = {
      result: "denied",
      reason: null,
      message: "",
      ticket_id: null,
      product_id: null,
      product_name: null,
      admits: null,
      slot_id: null,
      first_used_at: null,
      first_used_by: null,
      offline: !this.online,
      admitted_today: this.admittedToday,
    };
    const ticket = this.sales.flatMap((s) => (s.voided ? [] : s.tickets)).find((t) => t.code === code);
    if (!ticket) return { ...base, reason: "invalid", message: "Not a valid ticket: unreadable, altered or forged" };
    const described = { ...base, ticket_id: ticket.ticket_id, product_id: ticket.product_id, product_name: ticket.product_name, admits: ticket.admits };
    const first = this.redeemed.get(code);
    if (first)
      return { ...described, reason: "already_used", message: "Already used", first_used_at: first, first_used_by: "Main gate" };
    const at = new Date().toISOString();
    this.redeemed.set(code, at);
    this.admittedToday += ticket.admits;
    return { ...described, result: "admitted", message: "Welcome", first_used_at: at, first_used_by: this.deviceName, admitted_today: this.admittedToday };
  }
  async dayReport(supervisorPin: string, date: string) {
    await this.delay();
    if (STAFF[supervisorPin]?.role !== "supervisor") fail("not_supervisor", "That is not a supervisor's PIN.");
    if (!this.online) fail("offline", "The day report needs the server, which cannot be reached.");
    return {
      date,
      museum: "Musée des Tessères",
      online: { orders: 3, admissions: 7, gross: 9500 },
      counters: [{ counter: this.deviceName, sales: this.sales.length, gross: this.sales.reduce((a, s) => a + s.total, 0), over_short: 0 }],
      by_product: PRODUCTS.slice(0, 3).map((p) => ({ product_id: p.product_id, quantity: 2, gross: p.price * 2 })),
      missing_uploads: [],
      leases: [{ lease_id: "0190f2a4-0000-7000-8000-000000000001", counter: "Counter 2", slot_id: this.slots[2].slot_id, granted: 12, sold: 3, last_seen: "2026-01-01T10:00:00Z" }],
      gate_conflicts: [],
    };
  }
  async dayReportCsv(supervisorPin: string, date: string) {
    await this.delay();
    if (STAFF[supervisorPin]?.role !== "supervisor") fail("not_supervisor", "That is not a supervisor's PIN.");
    return `date,${date}\r\ncounter,gross\r\n${this.deviceName},${this.sales.reduce((a, s) => a + s.total, 0)}\r\n`;
  }
  async leases(supervisorPin: string, date: string) {
    await this.delay();
    if (STAFF[supervisorPin]?.role !== "supervisor") fail("not_supervisor", "That is not a supervisor's PIN.");
    return [
      { lease_id: "0190f2a4-0000-7000-8000-000000000001", device: "Counter 2", slot_id: `${date}T11:00`, escrow: 12, sold: 3, revoked: this.revoked.length > 0, last_sync_at: null },
    ];
  }
  async revokeLease(supervisorPin: string, leaseId: string) {
    await this.delay();
    if (STAFF[supervisorPin]?.role !== "supervisor") fail("not_supervisor", "That is not a supervisor's PIN.");
    this.revoked.push(leaseId);
    return { lease_id: leaseId, returned: 9 };
  }
  exports: Record<string, string> = {};
  async saveExport(fileName: string, contents: string) {
    this.exports[fileName] = contents;
    await this.delay();
    return `/tmp/${fileName}`;
  }
}
