// The shop's view of the public API (wire types in crates/core/src/api/shop.rs
// and api/online.rs). Every call goes through `Api`, so tests swap `fetch`.

export type Language = "fr" | "en";

export interface Money {
  /** Minor units (cents). */
  amount: number;
  currency: string;
}

export interface ShopConfig {
  museum: string;
  time_zone: string;
  currency: string;
  languages: Language[];
  default_language: Language;
  language: Language;
  hold_seconds: number;
  cancel_deadline_hours: number;
  payment_provider: string;
  booking_horizon_days: number;
  /** The server's clock when it answered (RFC 3339). */
  now: string;
  /** High-demand sales whose days are booked through a waiting room. */
  waiting_rooms?: RoomInfo[];
}

export interface RoomInfo {
  id: string;
  name: string;
  from: string;
  until: string;
  opens_at: string;
  phase: "before_opening" | "open" | "sold_out";
  waiting: number;
  in_shop: number;
  admitted: number;
  rate_per_minute: number;
}

export type PlaceState = "before_opening" | "waiting" | "admitted" | "sold_out" | "over";

export interface PlaceStatus {
  room: string;
  state: PlaceState;
  opens_at: string;
  place: string;
  position: number | null;
  ahead: number | null;
  waiting: number;
  eta_seconds: number | null;
  eta_error_seconds: number | null;
  rate_per_minute: number;
  pass: string | null;
  pass_until: string | null;
  poll_after_ms: number;
}

export interface CalendarDay {
  /** YYYY-MM-DD, the museum's day. */
  date: string;
  closed: boolean;
  available: number;
  capacity: number;
  sold_out: boolean;
}

export interface SlotAvailability {
  /** "2026-12-05T10:00", museum local time. */
  slot_id: string;
  starts_at: string;
  ends_at: string;
  capacity: number;
  available: number;
  sold: number;
  past: boolean;
}

export interface Availability {
  date: string;
  museum: string;
  time_zone: string;
  closed: boolean;
  slots: SlotAvailability[];
}

export interface Product {
  id: string;
  name: string;
  price: number;
  vat: string;
  admits: number;
  requires_membership?: boolean;
  sold_online?: boolean;
  /** The name in other languages, by language code. */
  names?: Record<string, string>;
}

export interface Catalogue {
  museum: { name: string; time_zone: string; currency: string };
  vat_rates: Record<string, number>;
  products: Product[];
}

export interface CartLine {
  product_id: string;
  quantity: number;
  membership_numbers?: string[];
}

export interface PricedLine {
  product_id: string;
  name: string;
  quantity: number;
  unit_price: number;
  vat_bp: number;
  amounts: { gross: number; net: number; tax: number };
  admits_each: number;
}

export interface Hold {
  hold_id: string;
  slot_id: string;
  expires_at: string;
  total: Money;
  admissions: number;
  lines: PricedLine[];
}

export interface Checkout {
  checkout_id: string;
  hold_id: string;
  provider: string;
  redirect_url: string;
  total: Money;
  hold_expires_at: string;
}

export type CheckoutState = "awaiting_payment" | "confirmed" | "refunded" | "failed";

export interface CheckoutStatus {
  checkout_id: string;
  state: CheckoutState;
  booking_token: string | null;
}

export interface BookingTicket {
  ticket_id: string;
  product_id: string;
  product_name: string;
  admits: number;
  price: Money;
  code: string;
  state: "valid" | "used" | "cancelled";
}

export interface Booking {
  order_id: string;
  reference: string;
  museum: string;
  time_zone: string;
  language: Language;
  name: string;
  email: string;
  channel: string;
  slot_id: string;
  starts_at: string;
  ends_at: string;
  total: Money;
  refunded: Money;
  created_at: string;
  cancellable_until: string;
  tickets: BookingTicket[];
}

export interface Nearest {
  slot_id: string;
  admissions: number;
  slots: SlotAvailability[];
}

export interface WaitlistEntry {
  entry_id: string;
  slot_id: string;
  party: number;
  position: number;
}

export interface Offer {
  slot_id: string;
  party: number;
  expires_at: string;
  state: "open" | "taken" | "expired";
  language: Language;
  email: string;
}

/** An answer other than 2xx, with the API's stable error code. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A fresh Idempotency-Key: one per attempt, reused when that attempt is retried. */
export function newKey(): string {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const bytes = new Uint8Array(16);
  c.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

type Fetch = typeof fetch;

/** What the shop uses of the browser's `EventSource` (tests pass their own). */
export interface EventSourceLike {
  addEventListener(type: string, listener: (e: MessageEvent) => void): void;
  close(): void;
  onopen: ((e: Event) => void) | null;
  onerror: ((e: Event) => void) | null;
}
export type OpenEventSource = (url: string) => EventSourceLike;

/** The day with `lines` put in place of the slots they name (new ones added,
 * in slot order): what a `changed` event means. */
export function mergeSlots(day: Availability, lines: SlotAvailability[]): Availability {
  const byId = new Map(day.slots.map((s) => [s.slot_id, s]));
  for (const l of lines) byId.set(l.slot_id, l);
  const slots = [...byId.values()].sort((a, b) => (a.slot_id < b.slot_id ? -1 : a.slot_id > b.slot_id ? 1 : 0));
  return { ...day, slots };
}

function parseJson<T>(text: string): T | null {
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

export class Api {
  constructor(
    private fetchFn: Fetch = (...args) => fetch(...args),
    public base = "",
    /** How to listen to the server's event streams; none: pages poll. */
    private openStream: OpenEventSource | null = null,
  ) {}

  /**
   * Follows a day's places as the server pushes them: `onDay` with the
   * whole day first, then each time a slot changes; `onLive` says whether
   * the stream is up (the browser reconnects by itself, resuming where it
   * was). Null when this shop cannot listen: the page polls instead.
   */
  watchAvailability(
    date: string,
    onDay: (day: Availability) => void,
    onLive: (live: boolean) => void,
  ): (() => void) | null {
    const open = this.openStream;
    if (!open) return null;
    const url = `${this.base}/v1/events/availability?date=${encodeURIComponent(date)}`;
    let current: Availability | null = null;
    let source: EventSourceLike | null = null;
    let stopped = false;
    const connect = () => {
      const s = open(url);
      source = s;
      s.onopen = () => onLive(true);
      // The browser retries on its own with Last-Event-ID; meanwhile the
      // page polls.
      s.onerror = () => onLive(false);
      s.addEventListener("snapshot", (e) => {
        const day = parseJson<Availability>(e.data);
        if (!day || day.date !== date) return;
        current = day;
        onDay(day);
        onLive(true);
      });
      s.addEventListener("changed", (e) => {
        const change = parseJson<{ date: string; slots: SlotAvailability[] }>(e.data);
        if (!change || !current || change.date !== date || !Array.isArray(change.slots)) return;
        current = mergeSlots(current, change.slots);
        onDay(current);
      });
      // Fell behind and dropped by the server: start again from a snapshot.
      s.addEventListener("resync", () => {
        s.close();
        onLive(false);
        if (!stopped) connect();
      });
    };
    connect();
    return () => {
      stopped = true;
      source?.close();
    };
  }

  language: Language | null = null;

  private async call<T>(
    method: string,
    path: string,
    body?: unknown,
    key?: string,
    extra?: Record<string, string>,
  ): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json", ...extra };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (key) headers["idempotency-key"] = key;
    if (this.language) headers["accept-language"] = this.language;
    let res: Response;
    try {
      res = await this.fetchFn(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "network", "network");
    }
    const text = await res.text();
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) {
      throw new ApiError(res.status, json?.error?.code ?? "http_" + res.status, json?.error?.message ?? text);
    }
    return json as T;
  }

  config() {
    return this.call<ShopConfig>("GET", "/v1/shop/config");
  }
  catalogue() {
    return this.call<Catalogue>("GET", "/v1/catalogue");
  }
  calendar(from: string, days: number) {
    return this.call<{ days: CalendarDay[] }>("GET", `/v1/calendar?from=${from}&days=${days}`);
  }
  availability(date: string) {
    return this.call<Availability>("GET", `/v1/availability?date=${encodeURIComponent(date)}`);
  }
  nearest(slotId: string, admissions: number) {
    return this.call<Nearest>(
      "GET",
      `/v1/nearest?slot_id=${encodeURIComponent(slotId)}&admissions=${admissions}`,
    );
  }
  /** `pass`: for a day sold through a waiting room, the pass it gave. */
  hold(slotId: string, items: CartLine[], key: string, pass?: string) {
    const extra: Record<string, string> = pass ? { "tessera-queue-pass": pass } : {};
    return this.call<Hold>("POST", "/v1/holds", { slot_id: slotId, items }, key, extra);
  }
  /** Takes (or, for this browser session, finds again) a place in a waiting room. */
  queueJoin(room: string) {
    return this.call<PlaceStatus>("POST", `/v1/queue/${encodeURIComponent(room)}/join`);
  }
  queuePlace(room: string, place: string) {
    return this.call<PlaceStatus>("GET", `/v1/queue/${encodeURIComponent(room)}/place`, undefined, undefined, {
      "tessera-queue-place": place,
    });
  }
  queueLeave(room: string, place: string) {
    return this.call<null>("DELETE", `/v1/queue/${encodeURIComponent(room)}/place`, undefined, undefined, {
      "tessera-queue-place": place,
    });
  }
  releaseHold(holdId: string) {
    return this.call<null>("DELETE", `/v1/holds/${encodeURIComponent(holdId)}`);
  }
  /**
   * Gives a hold back as the page goes away (tab closed, another site):
   * `keepalive` lets the request outlive the page. Fire and forget — a hold
   * left behind expires by itself.
   */
  releaseOnExit(holdId: string) {
    try {
      void this.fetchFn(`${this.base}/v1/holds/${encodeURIComponent(holdId)}`, { method: "DELETE", keepalive: true }).catch(
        () => undefined,
      );
    } catch {
      // As above: it expires.
    }
  }
  checkout(
    holdId: string,
    body: { name: string; email: string; language: Language; accept_terms: boolean },
    key: string,
  ) {
    return this.call<Checkout>("POST", `/v1/holds/${encodeURIComponent(holdId)}/checkout`, body, key);
  }
  checkoutStatus(checkoutId: string) {
    return this.call<CheckoutStatus>("GET", `/v1/checkouts/${encodeURIComponent(checkoutId)}`);
  }
  booking(token: string) {
    return this.call<Booking>("GET", `/v1/bookings/${encodeURIComponent(token)}`);
  }
  resend(token: string) {
    return this.call<unknown>("POST", `/v1/bookings/${encodeURIComponent(token)}/resend`);
  }
  cancel(token: string, ticketIds: string[], key: string) {
    return this.call<Booking>(
      "POST",
      `/v1/bookings/${encodeURIComponent(token)}/cancel`,
      { ticket_ids: ticketIds },
      key,
    );
  }
  joinWaitlist(body: { slot_id: string; email: string; party: number; language: Language }, key: string) {
    return this.call<WaitlistEntry>("POST", "/v1/waitlist", body, key);
  }
  offer(token: string) {
    return this.call<Offer>("GET", `/v1/offers/${encodeURIComponent(token)}`);
  }
  offerHold(token: string, items: CartLine[], key: string) {
    return this.call<Hold>("POST", `/v1/offers/${encodeURIComponent(token)}/hold`, { items }, key);
  }
}

export function pdfUrl(token: string) {
  return `/v1/bookings/${encodeURIComponent(token)}/tickets.pdf`;
}
export function icsUrl(token: string) {
  return `/v1/bookings/${encodeURIComponent(token)}/booking.ics`;
}
