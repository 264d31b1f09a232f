// An in-memory stand-in for the server's public API, speaking the same JSON,
// for the shop's unit tests: the demo museum's catalogue, one day's entry
// times, holds, checkouts and bookings. Records every request it gets.
import type { Booking, Catalogue, Hold, SlotAvailability } from "./api";

export interface Call {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: any;
  keepalive: boolean;
}

export const CATALOGUE: Catalogue = {
  museum: { name: "Musée des Tessères", time_zone: "Europe/Paris", currency: "EUR" },
  vat_rates: { admission: 550, standard: 2000 },
  products: [
    { id: "adult", name: "Adult", price: 1500, vat: "admission", admits: 1 },
    { id: "reduced", name: "Reduced (students, 18-25, jobseekers)", price: 1000, vat: "admission", admits: 1 },
    { id: "child", name: "Child under 18", price: 0, vat: "admission", admits: 1 },
    { id: "family", name: "Family (2 adults + 2 children)", price: 4000, vat: "admission", admits: 4 },
    { id: "member", name: "Member", price: 0, vat: "admission", admits: 1, requires_membership: true },
    { id: "audio-guide", name: "Audio guide", price: 500, vat: "standard", admits: 0 },
  ],
};

/** Paris is UTC+1 in December: "2026-12-05T10:00" local is 09:00Z. */
function slot(id: string, capacity: number, available: number, past = false): SlotAvailability {
  const [date, hm] = id.split("T");
  const [h, m] = hm.split(":").map(Number);
  const start = new Date(`${date}T${String(h - 1).padStart(2, "0")}:${String(m).padStart(2, "0")}:00Z`);
  return {
    slot_id: id,
    starts_at: start.toISOString().replace(".000", ""),
    ends_at: new Date(start.getTime() + 30 * 60_000).toISOString().replace(".000", ""),
    capacity,
    available,
    sold: capacity - available,
    past,
  };
}

export class FakeBackend {
  calls: Call[] = [];
  language: "fr" | "en" = "fr";
  /** Day → its entry times. */
  days = new Map<string, SlotAvailability[]>();
  holds = new Map<string, Hold>();
  /** Answers the next hold with 409 sold_out. */
  soldOutNext = false;
  /** Fails the next request with a network error. */
  failNext = false;
  /** Every request fails as a network error while set (the visitor is offline). */
  failAll = false;
  /** How far the server's clock is ahead of the device's. */
  skewMs = 0;
  checkoutState: "awaiting_payment" | "confirmed" | "failed" | "refunded" = "awaiting_payment";
  booking: Booking;
  private seq = 0;

  constructor() {
    this.days.set("2026-12-05", [
      slot("2026-12-05T10:00", 150, 150),
      slot("2026-12-05T10:30", 150, 8),
      slot("2026-12-05T11:00", 150, 0),
      slot("2026-12-05T11:30", 150, 140),
    ]);
    this.booking = {
      order_id: "8d1f0c1e-0000-4000-8000-000000000001",
      reference: "TS-4Q7K",
      museum: CATALOGUE.museum.name,
      time_zone: "Europe/Paris",
      language: "fr",
      name: "Alice Martin",
      email: "alice@example.org",
      channel: "web",
      slot_id: "2026-12-05T10:00",
      starts_at: "2026-12-05T09:00:00Z",
      ends_at: "2026-12-05T09:30:00Z",
      total: { amount: 3000, currency: "EUR" },
      refunded: { amount: 0, currency: "EUR" },
      created_at: "2026-12-01T10:00:00Z",
      cancellable_until: "2099-12-04T09:00:00Z",
      tickets: ["adult", "adult", "child"].map((p, i) => ({
        ticket_id: `t-${i + 1}`,
        product_id: p,
        product_name: p === "adult" ? "Adult" : "Child under 18",
        admits: 1,
        price: { amount: p === "adult" ? 1500 : 0, currency: "EUR" },
        code: `TS1.code-${i + 1}`,
        state: "valid" as const,
      })),
    };
  }

  calendarDay(date: string) {
    const weekday = new Date(date + "T12:00:00Z").getUTCDay();
    if (weekday === 1 || date === "2026-12-25") return { date, closed: true, available: 0, capacity: 0, sold_out: false };
    const slots = this.days.get(date);
    if (slots) {
      const available = slots.filter((s) => !s.past).reduce((n, s) => n + s.available, 0);
      return { date, closed: false, available, capacity: 600, sold_out: available === 0 };
    }
    if (date === "2026-12-06") return { date, closed: false, available: 0, capacity: 2100, sold_out: true };
    return { date, closed: false, available: 1680, capacity: 1680, sold_out: false };
  }

  fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input), "http://shop.test");
    const method = (init.method ?? "GET").toUpperCase();
    const headers = Object.fromEntries(Object.entries((init.headers ?? {}) as Record<string, string>).map(([k, v]) => [k.toLowerCase(), v]));
    const body = init.body ? JSON.parse(String(init.body)) : null;
    this.calls.push({ method, path: url.pathname + url.search, headers, body, keepalive: init.keepalive === true });
    if (this.failNext || this.failAll) {
      this.failNext = false;
      throw new TypeError("Failed to fetch");
    }
    const json = (status: number, value: unknown) =>
      new Response(value === null ? "" : JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
    const err = (status: number, code: string, message = code) => json(status, { error: { code, message } });
    const p = url.pathname;
    let m: RegExpExecArray | null;
    if (p === "/v1/shop/config") {
      return json(200, {
        museum: CATALOGUE.museum.name,
        time_zone: "Europe/Paris",
        currency: "EUR",
        languages: ["fr", "en"],
        default_language: "fr",
        language: this.language,
        hold_seconds: 600,
        cancel_deadline_hours: 24,
        payment_provider: "demo",
        booking_horizon_days: 400,
        now: new Date(Date.now() + this.skewMs).toISOString(),
      });
    }
    if (p === "/v1/catalogue") return json(200, CATALOGUE);
    if (p === "/v1/calendar") {
      const from = url.searchParams.get("from")!;
      const n = Number(url.searchParams.get("days"));
      const days = [];
      for (let i = 0; i < n; i++) {
        const d = new Date(from + "T12:00:00Z");
        d.setUTCDate(d.getUTCDate() + i);
        days.push(this.calendarDay(d.toISOString().slice(0, 10)));
      }
      return json(200, { days });
    }
    if (p === "/v1/availability") {
      const date = url.searchParams.get("date")!;
      const closed = this.calendarDay(date).closed;
      return json(200, { date, museum: CATALOGUE.museum.name, time_zone: "Europe/Paris", closed, slots: closed ? [] : this.days.get(date) ?? [] });
    }
    if (p === "/v1/nearest") {
      const id = url.searchParams.get("slot_id")!;
      const n = Number(url.searchParams.get("admissions"));
      const slots = (this.days.get(id.slice(0, 10)) ?? []).filter((s) => s.slot_id !== id && s.available >= n);
      return json(200, { slot_id: id, admissions: n, slots });
    }
    if (p === "/v1/holds" && method === "POST") {
      if (!headers["idempotency-key"]) return err(400, "missing_idempotency_key");
      if (this.soldOutNext) {
        this.soldOutNext = false;
        return err(409, "sold_out", "sold out: 3 places requested, 0 left");
      }
      const prices = Object.fromEntries(CATALOGUE.products.map((x) => [x.id, x]));
      const lines = body.items.map((l: any) => ({
        product_id: l.product_id,
        name: prices[l.product_id].name,
        quantity: l.quantity,
        unit_price: prices[l.product_id].price,
        vat_bp: CATALOGUE.vat_rates[prices[l.product_id].vat],
        amounts: { gross: prices[l.product_id].price * l.quantity, net: 0, tax: 0 },
        admits_each: prices[l.product_id].admits,
      }));
      const hold: Hold = {
        hold_id: `00000000-0000-4000-8000-00000000000${++this.seq}`,
        slot_id: body.slot_id,
        expires_at: new Date(Date.now() + this.skewMs + 600_000).toISOString(),
        total: { amount: lines.reduce((n: number, l: any) => n + l.amounts.gross, 0), currency: "EUR" },
        admissions: lines.reduce((n: number, l: any) => n + l.admits_each * l.quantity, 0),
        lines,
      };
      this.holds.set(hold.hold_id, hold);
      return json(201, hold);
    }
    if ((m = /^\/v1\/holds\/([^/]+)$/.exec(p)) && method === "DELETE") {
      this.holds.delete(m[1]);
      return new Response(null, { status: 204 });
    }
    if ((m = /^\/v1\/holds\/([^/]+)\/checkout$/.exec(p)) && method === "POST") {
      if (!body.accept_terms) return err(422, "terms_not_accepted");
      const hold = this.holds.get(m[1]);
      if (!hold) return err(410, "hold_expired");
      return json(201, {
        checkout_id: "co_123",
        hold_id: hold.hold_id,
        provider: "demo",
        redirect_url: "/pay/demo/pay_123",
        total: hold.total,
        hold_expires_at: hold.expires_at,
      });
    }
    if ((m = /^\/v1\/checkouts\/([^/]+)$/.exec(p))) {
      if (m[1] !== "co_123") return err(404, "unknown_checkout");
      return json(200, {
        checkout_id: m[1],
        state: this.checkoutState,
        booking_token: this.checkoutState === "confirmed" ? "TOKEN123" : null,
      });
    }
    if ((m = /^\/v1\/bookings\/([^/]+)$/.exec(p))) {
      if (m[1] !== "TOKEN123") return err(404, "unknown_booking");
      return json(200, this.booking);
    }
    if ((m = /^\/v1\/bookings\/([^/]+)\/cancel$/.exec(p)) && method === "POST") {
      let refunded = this.booking.refunded.amount;
      this.booking = {
        ...this.booking,
        tickets: this.booking.tickets.map((x) => {
          if (!body.ticket_ids.includes(x.ticket_id)) return x;
          refunded += x.price.amount;
          return { ...x, state: "cancelled" as const };
        }),
      };
      this.booking.refunded = { amount: refunded, currency: "EUR" };
      return json(200, this.booking);
    }
    if ((m = /^\/v1\/bookings\/([^/]+)\/resend$/.exec(p)) && method === "POST") return json(202, { queued: true });
    if ((m = /^\/v1\/offers\/([^/]+)$/.exec(p))) {
      if (m[1] !== "OFFER1" && m[1] !== "OFFER-OLD") return err(404, "unknown_offer");
      return json(200, {
        slot_id: "2026-12-05T11:00",
        party: 2,
        expires_at: new Date(Date.now() + 30 * 60_000).toISOString(),
        state: m[1] === "OFFER1" ? "open" : "expired",
        language: "fr",
        email: "bob@example.org",
      });
    }
    if ((m = /^\/v1\/offers\/([^/]+)\/hold$/.exec(p)) && method === "POST") {
      const hold: Hold = {
        hold_id: "00000000-0000-4000-8000-0000000000ff",
        slot_id: "2026-12-05T11:00",
        expires_at: new Date(Date.now() + this.skewMs + 600_000).toISOString(),
        total: { amount: 3000, currency: "EUR" },
        admissions: 2,
        lines: [
          { product_id: "adult", name: "Adult", quantity: 2, unit_price: 1500, vat_bp: 550, amounts: { gross: 3000, net: 2844, tax: 156 }, admits_each: 1 },
        ],
      };
      this.holds.set(hold.hold_id, hold);
      return json(201, hold);
    }
    if (p === "/v1/waitlist" && method === "POST") {
      if (body.party > 150) return err(422, "party_too_large");
      return json(201, { entry_id: "e1", slot_id: body.slot_id, party: body.party, position: 3 });
    }
    return err(404, "not_found");
  };
}
