// The engine as the screens see it: one typed function per Tauri command
// (src-tauri/src/commands.rs), with the JSON shapes of
// crates/terminal/src/views.rs. Screens never call `invoke` themselves, so a
// fake backend can stand in for the app in unit tests and in a browser.

// Wire types rendered from the Rust types (ts-rs; see
// crates/core/tests/ts_bindings.rs): never edited by hand. Regenerate with
//   TESSERA_WRITE_TS=1 cargo test -p tessera-core --test ts_bindings
import type { CartLine, PaymentMethod, PricedLine, Role, StaffRole, VatSplit } from "./generated";
export type {
  CartLine,
  ChannelReport,
  DayReport,
  LeaseId,
  LeaseInfo,
  PaymentMethod,
  PricedLine,
  Revoked,
  Role,
  StaffRole,
  VatSplit,
} from "./generated";

export type Timestamp = string; // RFC 3339, UTC
export type Uuid = string;
/** "2026-12-02T10:00" (museum local time). */
export type SlotId = string;

export interface ShiftView {
  shift_id: Uuid;
  cashier: string;
  opened_at: Timestamp;
  float: number;
}

export interface Status {
  device_name: string;
  role: Role;
  museum: string;
  server_url: string;
  online: boolean;
  last_sync_at: Timestamp | null;
  last_sync_error: string | null;
  pending_sales: number;
  pending_voids: number;
  pending_shifts: number;
  pending_scans: number;
  /** Uploaded sales the server holds for a supervisor to resolve. */
  needs_supervisor?: number;
  shift: ShiftView | null;
  printer: string;
  now: Timestamp;
  /** The museum's IANA zone ("Europe/Paris"), when the engine reports it. */
  time_zone?: string;
  /** The server pushes changes to this device as they happen; false: it polls. */
  live?: boolean;
  /** Seconds between the device's own syncs now. */
  poll_every_s?: number;
  /** The gates this one shares admissions with, and whether each answers
   * (null: this machine's sharing is not running). */
  gate_peers?: { url: string; reachable: boolean | null }[];
}

/** What changed in the engine (the Tauri event `engine-changed`): a screen
 * re-reads what it shows of that, instead of polling. */
export type EngineChange = "status" | "slots" | "sales" | "catalogue";
export const ENGINE_CHANGES: readonly EngineChange[] = ["status", "slots", "sales", "catalogue"];

export interface SlotStatus {
  slot_id: SlotId;
  label: string;
  starts_at: Timestamp;
  ends_at: Timestamp;
  capacity: number;
  lease_left: number;
  remaining: number;
  as_of: Timestamp | null;
  closed: boolean;
}

export interface ProductView {
  product_id: string;
  name: string;
  price: number;
  vat_bp: number;
  admits: number;
  requires_membership: boolean;
}

export interface VatLine {
  rate_bp: number;
  label: string;
  amounts: VatSplit;
}

export interface Quote {
  lines: PricedLine[];
  total: number;
  currency: string;
  admissions: number;
  vat: VatLine[];
  lease_left: number;
}

export type PaymentRequest = { method: "cash"; tendered: number } | { method: "card" };

export interface SaleRequest {
  slot_id: SlotId;
  items: CartLine[];
  payment: PaymentRequest;
}

export interface TicketView {
  ticket_id: Uuid;
  product_id: string;
  product_name: string;
  admits: number;
  code: string;
}

export interface SaleView {
  sale_id: Uuid;
  terminal_seq: number;
  slot_id: SlotId;
  slot_label: string;
  created_at: Timestamp;
  cashier: string;
  lines: PricedLine[];
  total: number;
  currency: string;
  admissions: number;
  vat: VatLine[];
  payment_method: PaymentMethod;
  tendered: number | null;
  change: number | null;
  tickets: TicketView[];
  voided: boolean;
  uploaded: boolean;
}

export type PrintOutcome = { status: "printed" } | { status: "no_printer" } | { status: "failed"; message: string };

export interface SaleDone {
  sale: SaleView;
  printed: PrintOutcome;
}

export interface VoidDone {
  sale_id: Uuid;
  refund: number;
  refund_method: PaymentMethod;
  returned_to_lease: boolean;
  approved_by: string;
}

export interface StaffView {
  name: string;
  role: StaffRole;
}

export interface MethodTotal {
  method: PaymentMethod;
  sales: number;
  refunds: number;
  net: number;
}

export interface ProductTotal {
  product_id: string;
  name: string;
  quantity: number;
  gross: number;
}

export interface ShiftReport {
  kind: "x" | "z";
  shift_id: Uuid;
  counter: string;
  cashier: string;
  opened_at: Timestamp;
  closed_at: Timestamp | null;
  printed_at: Timestamp;
  currency: string;
  float: number;
  sales_count: number;
  voids_count: number;
  admissions: number;
  first_seq: number | null;
  last_seq: number | null;
  gross: number;
  by_method: MethodTotal[];
  by_product: ProductTotal[];
  vat: VatLine[];
  expected_cash: number;
  counted_cash: number | null;
  over_short: number | null;
}

export interface SyncSummary {
  uploaded_sales: number;
  acked_seq: number;
  pending_sales: number;
  leases_granted: number;
  places_returned: number;
}

export type DenyReason = "invalid" | "already_used" | "wrong_day" | "too_early" | "too_late" | "voided" | "revoked_key" | "not_in_catalogue";

/** A gate's answer to one scan (the engine's `ScanView`). */
export interface ScanView {
  result: "admitted" | "denied";
  reason: DenyReason | null;
  /** The decision in plain words for the attendant. */
  message: string;
  ticket_id: Uuid | null;
  product_id: string | null;
  product_name: string | null;
  admits: number | null;
  slot_id: SlotId | null;
  /** On a double use: when and where the ticket first got in. On an
   * admission: this scan. */
  first_used_at: Timestamp | null;
  first_used_by: string | null;
  /** Decided on this device without the server (offline fallback). */
  offline: boolean;
  /** Admissions made at this device today. */
  admitted_today: number;
  decided_in_us?: number;
}

/** The engine words its errors as clauses ("PIN not recognised"); on screen
 * they stand alone, so they start with a capital. */
export function sentence(message: string): string {
  return message.charAt(0).toUpperCase() + message.slice(1);
}

/** What a failed command rejects with: the engine's `TerminalError`. */
export class EngineError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "EngineError";
  }

  /** Whatever `invoke` rejected with → an error with a message for the cashier. */
  static from(raw: unknown): EngineError {
    if (raw instanceof EngineError) return raw;
    if (raw && typeof raw === "object" && "message" in raw) {
      const r = raw as { code?: unknown; message?: unknown };
      return new EngineError(String(r.code ?? "error"), sentence(String(r.message)));
    }
    if (typeof raw === "string") return new EngineError("error", sentence(raw));
    return new EngineError("error", "Something went wrong. Please try again.");
  }
}

/** Pre-filled setup fields (from the app's environment, for demos). */
export interface SetupDefaults {
  server_url: string | null;
  code: string | null;
  name: string | null;
  printer: string | null;
}

export interface Backend {
  isEnrolled(): Promise<boolean>;
  setupDefaults(): Promise<SetupDefaults>;
  enrol(serverUrl: string, code: string, name: string): Promise<Status>;
  status(): Promise<Status>;
  products(): Promise<ProductView[]>;
  slotsToday(): Promise<SlotStatus[]>;
  quote(slotId: SlotId, items: CartLine[]): Promise<Quote>;
  login(pin: string): Promise<StaffView>;
  openShift(pin: string, float: number): Promise<ShiftView>;
  sell(request: SaleRequest): Promise<SaleDone>;
  salesToday(): Promise<SaleView[]>;
  reprint(saleId: Uuid): Promise<PrintOutcome>;
  voidSale(saleId: Uuid, supervisorPin: string, reason: string): Promise<VoidDone>;
  xReport(): Promise<ShiftReport>;
  closeShift(counted: number): Promise<ShiftReport>;
  setPrinter(spec: string): Promise<void>;
  testPrint(): Promise<PrintOutcome>;
  syncNow(): Promise<SyncSummary>;
  scan(code: string): Promise<ScanView>;
  dayReport(supervisorPin: string, date: string): Promise<unknown>;
  /** The day report as the server's own CSV. */
  dayReportCsv(supervisorPin: string, date: string): Promise<string>;
  /** The counters' leases of a day, to pick one to revoke. */
  leases(supervisorPin: string, date: string): Promise<unknown>;
  revokeLease(supervisorPin: string, leaseId: Uuid): Promise<unknown>;
  /** Writes an export next to the app's data and returns where it went. */
  saveExport(fileName: string, contents: string): Promise<string>;
  /** Calls `listener` with each engine change as it happens; returns the
   * way to stop. */
  onEngineChange(listener: (change: EngineChange) => void): () => void;
}

type Invoke = <T>(cmd: string, args?: Record<string, unknown>) => Promise<T>;
/** Tauri's `listen` from `@tauri-apps/api/event`. */
type Listen = <T>(event: string, handler: (e: { payload: T }) => void) => Promise<() => void>;

/** The real backend: Tauri commands. Argument names are camelCase here;
 * Tauri maps them to the commands' snake_case parameters. */
export function tauriBackend(invoke: Invoke, listen: Listen): Backend {
  const call = async <T>(cmd: string, args?: Record<string, unknown>): Promise<T> => {
    try {
      return await invoke<T>(cmd, args);
    } catch (raw) {
      throw EngineError.from(raw);
    }
  };
  return {
    isEnrolled: () => call("is_enrolled"),
    setupDefaults: () => call("setup_defaults"),
    enrol: (serverUrl, code, name) => call("enrol", { serverUrl, code, name }),
    status: () => call("status"),
    products: () => call("products"),
    slotsToday: () => call("slots_today"),
    quote: (slotId, items) => call("quote", { slotId, items }),
    login: (pin) => call("login", { pin }),
    openShift: (pin, float) => call("open_shift", { pin, float }),
    sell: (request) => call("sell", { request }),
    salesToday: () => call("sales_today"),
    reprint: (saleId) => call("reprint", { saleId }),
    voidSale: (saleId, supervisorPin, reason) => call("void_sale", { saleId, supervisorPin, reason }),
    xReport: () => call("x_report"),
    closeShift: (counted) => call("close_shift", { counted }),
    setPrinter: (spec) => call("set_printer", { spec }),
    testPrint: () => call("test_print"),
    syncNow: () => call("sync_now"),
    scan: (code) => call("scan", { code }),
    dayReport: (supervisorPin, date) => call("day_report", { supervisorPin, date }),
    dayReportCsv: (supervisorPin, date) => call("day_report_csv", { supervisorPin, date }),
    leases: (supervisorPin, date) => call("leases", { supervisorPin, date }),
    revokeLease: (supervisorPin, leaseId) => call("revoke_lease", { supervisorPin, leaseId }),
    saveExport: (fileName, contents) => call("save_export", { fileName, contents }),
    onEngineChange: (listener) => {
      let stop: (() => void) | null = null;
      let stopped = false;
      void listen<EngineChange>("engine-changed", (e) => listener(e.payload)).then((unlisten) => {
        if (stopped) unlisten();
        else stop = unlisten;
      });
      return () => {
        stopped = true;
        stop?.();
      };
    },
  };
}
