// The shop's flows against a fake backend: what a visitor sees and what the
// server is asked, page by page.
import { render } from "preact";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Api } from "./api";
import { App } from "./app";
import { FakeBackend } from "./fake-backend";
import { resetCatalogueCache } from "./pages/slot";

let root: HTMLElement;
let backend: FakeBackend;
let redirects: string[];

async function waitFor<T>(probe: () => T | null | undefined | false, what: string, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; page: ${root.textContent}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const $ = <E extends Element = HTMLElement>(css: string) => root.querySelector<E>(css as any) as E | null;
const $$ = (css: string) => Array.from(root.querySelectorAll<HTMLElement>(css));
const byText = (css: string, text: string | RegExp) =>
  $$(css).find((e) => (typeof text === "string" ? e.textContent?.includes(text) : text.test(e.textContent ?? "")));
const plain = (s: string | null | undefined) => (s ?? "").replace(/[\u00a0\u202f]/g, " ");

/** Lets Preact render what the last event changed, as a person's pace would. */
const tick = () => new Promise((r) => setTimeout(r, 0));

async function type(input: HTMLInputElement, value: string) {
  input.value = value;
  input.dispatchEvent(new Event("input", { bubbles: true }));
  await tick();
}

async function click(el: Element | null | undefined) {
  if (!el) throw new Error("nothing to click");
  (el as HTMLElement).click();
  await tick();
}

function start(path: string, pollMs = 60_000) {
  history.replaceState(null, "", path);
  render(<App api={new Api(backend.fetch)} pollMs={pollMs} redirect={(u) => redirects.push(u)} />, root);
}

beforeEach(() => {
  backend = new FakeBackend();
  redirects = [];
  localStorage.clear();
  sessionStorage.clear();
  resetCatalogueCache();
  root = document.createElement("div");
  document.body.appendChild(root);
});

afterEach(() => {
  render(null, root);
  root.remove();
});

describe("the calendar", () => {
  it("shows closed, sold-out and bookable days and moves between months", async () => {
    start("/?month=2026-12");
    await waitFor(() => $("table.calendar"), "calendar");
    expect($("h2#month-title")?.textContent).toBe("décembre 2026");
    const monday = await waitFor(() => $('[data-date="2026-12-07"]'), "closed Monday");
    expect(monday.getAttribute("aria-label")).toBe("lundi 7 décembre 2026, musée fermé");
    expect(monday.textContent).toContain("Fermé");
    // What a screen reader says is the whole date and what is left.
    const sunday = $('a[href="/day/2026-12-06"]')!;
    expect(sunday.querySelector(".mark")?.textContent).toBe("Complet");
    expect(sunday.querySelector(".visually-hidden")?.textContent).toBe("dimanche 6 décembre 2026, complet");
    const saturday = $('a[href="/day/2026-12-05"]')!;
    expect(saturday.querySelector(".visually-hidden")?.textContent).toBe("samedi 5 décembre 2026, 298 places disponibles");
    // December 2026 starts on a Tuesday: one empty cell before it.
    expect($$("tbody tr:first-child td")[0].textContent).toBe("");
    expect(backend.calls.some((c) => c.path === "/v1/calendar?from=2026-12-01&days=31")).toBe(true);

    await click(byText("button", "Mois suivant"));
    await waitFor(() => $("h2#month-title")?.textContent === "janvier 2027", "next month");
    await waitFor(() => backend.calls.some((c) => c.path === "/v1/calendar?from=2027-01-01&days=31"), "January asked");
  });

  it("speaks English when the browser prefers it, and remembers a switch", async () => {
    backend.language = "en";
    start("/?month=2026-12");
    await waitFor(() => $("table.calendar"), "calendar");
    expect($("h1")?.textContent).toBe("Choose a date");
    expect(document.documentElement.lang).toBe("en");
    // The settings are asked with the browser's own Accept-Language.
    const first = backend.calls.find((c) => c.path === "/v1/shop/config")!;
    expect(first.headers["accept-language"]).toBeUndefined();
    await click(byText("button.lang", "Français"));
    await waitFor(() => $("h1")?.textContent === "Choisissez une date", "French");
    expect(localStorage.getItem("tessera-shop-language")).toBe("fr");
    expect(byText("button.lang", "Français")!.getAttribute("aria-pressed")).toBe("true");
  });
});

describe("buying", () => {
  it("goes from a day's times to tickets, a hold, checkout and the payment page", async () => {
    start("/day/2026-12-05");
    const list = await waitFor(() => $("ul.times"), "times");
    expect($("h1")?.textContent).toBe("Horaires du samedi 5 décembre 2026");
    expect(document.title).toBe("Horaires du samedi 5 décembre 2026 · Musée des Tessères");
    const items = Array.from(list.querySelectorAll("li"));
    expect(items.map((li) => plain(li.textContent))).toEqual([
      "10:00150 places restantes",
      "10:30Plus que 8 places",
      "11:00CompletListe d'attente (11:00)",
      "11:30140 places restantes",
    ]);
    expect($('a[href="/waitlist/2026-12-05T11:00"]')).not.toBeNull();

    await click($('a[href="/slot/2026-12-05T10:00"]'));
    await waitFor(() => $("form.tickets"), "ticket form");
    // Focus moves to the new page's heading.
    expect(document.activeElement?.tagName).toBe("H1");
    expect($("h1")?.textContent).toBe("Vos billets pour le samedi 5 décembre 2026 à 10:00");
    // Prices and VAT as the catalogue says.
    expect(plain($("#price-adult")?.textContent)).toBe("15,00 € l'unité · dont TVA 5,5 %");
    expect(plain($("#price-audio-guide")?.textContent)).toBe("5,00 € l'unité · dont TVA 20 %");

    // The audio guide alone is refused with the reason tied to the form.
    await click($('button[aria-label=\"Un billet « Audioguide » de plus\"]'));
    await waitFor(() => ($("#q-audio-guide") as HTMLInputElement).value === "1", "audio guide");
    await click($("#continue"));
    const err = await waitFor(() => $("#cart-error"), "cart error");
    expect(err.textContent).toBe("L'audioguide s'ajoute à un billet d'entrée.");
    expect($("fieldset")?.getAttribute("aria-describedby")).toBe("cart-error");
    await click($('button[aria-label=\"Un billet « Audioguide » de moins\"]'));

    await click($('button[aria-label=\"Un billet « Adulte » de plus\"]'));
    await waitFor(() => ($("#q-adult") as HTMLInputElement).value === "1", "1 adult");
    await click($('button[aria-label=\"Un billet « Adulte » de plus\"]'));
    await waitFor(() => ($("#q-adult") as HTMLInputElement).value === "2", "2 adults");
    await type($("#q-child") as HTMLInputElement, "1");
    await waitFor(() => plain($("[data-total]")?.textContent) === "30,00 €", "total 30 €");
    expect(plain($("#cart-total")?.textContent)).toContain("dont TVA : 1,56 €");
    expect(plain($("#cart-total")?.textContent)).toContain("3 entrées");

    // A member ticket needs its own membership number.
    await click($('button[aria-label=\"Un billet « Adhérent » de plus\"]'));
    const m = await waitFor(() => $("#m-member-0") as HTMLInputElement, "membership field");
    expect(root.querySelector('label[for="m-member-0"]')?.textContent).toBe("Numéro d'adhérent (billet 1)");
    await click($("#continue"));
    await waitFor(() => $("#m-member-0-error"), "membership error");
    expect(m.getAttribute("aria-invalid")).toBe("true");
    expect(m.getAttribute("aria-describedby")).toBe("m-member-0-hint m-member-0-error");
    await click($('button[aria-label=\"Un billet « Adhérent » de moins\"]'));
    await waitFor(() => !$("#m-member-0"), "member removed");

    await click($("#continue"));
    await waitFor(() => $("#countdown"), "checkout page");
    const hold = backend.calls.find((c) => c.method === "POST" && c.path === "/v1/holds")!;
    expect(hold.body).toEqual({
      slot_id: "2026-12-05T10:00",
      items: [
        { product_id: "adult", quantity: 2 },
        { product_id: "child", quantity: 1 },
      ],
    });
    expect(hold.headers["idempotency-key"]).toMatch(/.{16,}/);

    // Checkout: countdown, summary, and the form's errors tied to its fields.
    expect($("#countdown")?.textContent).toMatch(/^Temps restant(10:00|9:5\d)pour payer/);
    expect($("#countdown-announce")?.getAttribute("aria-live")).toBe("polite");
    expect(plain($("#summary")?.textContent)).toContain("2 × Adulte — 30,00 €");
    await click($("#pay"));
    await waitFor(() => $("#f-name-error"), "name error");
    expect($("#f-name")?.getAttribute("aria-describedby")).toBe("f-name-error");
    expect($("#f-email")?.getAttribute("aria-describedby")).toBe("f-email-hint f-email-error");
    expect($("#f-terms")?.getAttribute("aria-describedby")).toBe("f-terms-hint f-terms-error");
    expect(document.activeElement?.id).toBe("f-name");
    expect(backend.calls.some((c) => c.path.endsWith("/checkout"))).toBe(false);

    await type($("#f-name") as HTMLInputElement, "Alice Martin");
    await type($("#f-email") as HTMLInputElement, "alice@example.org");
    await click($("#f-terms"));
    await waitFor(() => ($("#f-terms") as HTMLInputElement).checked, "terms ticked");
    await click($("#pay"));
    await waitFor(() => redirects.length === 1, "redirect to the payment page");
    expect(redirects[0]).toBe("/pay/demo/pay_123");
    const checkout = backend.calls.find((c) => c.path.endsWith("/checkout"))!;
    expect(checkout.body).toEqual({ name: "Alice Martin", email: "alice@example.org", language: "fr", accept_terms: true });
    expect(checkout.headers["idempotency-key"]).toBeTruthy();
    // Going to pay does not give the places back.
    render(null, root);
    dispatchEvent(new Event("pagehide"));
    expect(backend.calls.some((c) => c.method === "DELETE")).toBe(false);
  });

  it("offers the nearest times when the chosen time sells out under the visitor", async () => {
    start("/slot/2026-12-05T10:00");
    await waitFor(() => $("form.tickets"), "ticket form");
    await type($("#q-adult") as HTMLInputElement, "3");
    backend.soldOutNext = true;
    await click($("#continue"));
    const notice = await waitFor(() => $("#sold-out"), "sold-out notice");
    expect(notice.textContent).toContain("Cette heure vient d'être complète");
    await waitFor(() => $$("ul.nearest li").length > 0, "nearest times");
    expect(backend.calls.some((c) => c.path === "/v1/nearest?slot_id=2026-12-05T10%3A00&admissions=3")).toBe(true);
    expect($$("ul.nearest li").map((li) => li.dataset.slot)).toEqual(["2026-12-05T10:30", "2026-12-05T11:30"]);
    expect(document.activeElement?.id).toBe("sold-out");
    expect($('a[href="/waitlist/2026-12-05T10:00?party=3"]')).not.toBeNull();
    // Choosing one keeps the tickets chosen.
    await click($('ul.nearest a[href="/slot/2026-12-05T11:30"]'));
    await waitFor(() => $("form.tickets") && ($("#q-adult") as HTMLInputElement).value === "3", "same tickets at 11:30");
  });

  it("says how old the places shown are, and when they could not be refreshed", async () => {
    start("/day/2026-12-05", 40);
    const fresh = await waitFor(() => byText("p.hint", "Places restantes à"), "freshness line");
    // The museum's wall clock, to the second.
    expect(plain(fresh.textContent)).toMatch(/^Places restantes à \d\d:\d\d:\d\d, mises à jour automatiquement\.$/);
    backend.failAll = true;
    const stale = await waitFor(() => $("p.hint.stale"), "stale warning");
    expect(plain(stale.textContent)).toMatch(/^Impossible d'actualiser depuis \d\d:\d\d:\d\d/);
    // The last numbers stay on screen, marked as old.
    expect($$("ul.times li").length).toBe(4);
    backend.failAll = false;
    await waitFor(() => !$("p.hint.stale") && byText("p.hint", "Places restantes à"), "fresh again");
  });

  it("reuses the Idempotency-Key when the same hold is retried after a network failure", async () => {
    start("/slot/2026-12-05T10:00");
    await waitFor(() => $("form.tickets"), "ticket form");
    await type($("#q-adult") as HTMLInputElement, "2");
    backend.failNext = true;
    await click($("#continue"));
    await waitFor(() => byText("p.error", "ne répond pas"), "network error");
    await click($("#continue"));
    await waitFor(() => $("#countdown"), "checkout after retry");
    const keys = backend.calls.filter((c) => c.path === "/v1/holds").map((c) => c.headers["idempotency-key"]);
    expect(keys).toHaveLength(2);
    expect(keys[0]).toBe(keys[1]);
  });

  it("counts down on the server's clock, not the device's", async () => {
    backend.skewMs = 7 * 24 * 3600_000;
    start("/slot/2026-12-05T10:00");
    await waitFor(() => $("form.tickets"), "ticket form");
    await type($("#q-adult") as HTMLInputElement, "1");
    await click($("#continue"));
    await waitFor(() => $("#countdown"), "checkout");
    expect($(".timer-clock")?.textContent).toMatch(/^(10:00|9:5\d)$/);
  });

  it("gives the places back when the visitor cancels or leaves", async () => {
    start("/slot/2026-12-05T10:00");
    await waitFor(() => $("form.tickets"), "ticket form");
    await type($("#q-adult") as HTMLInputElement, "1");
    await click($("#continue"));
    await waitFor(() => $("#cancel-hold"), "checkout");
    await click($("#cancel-hold"));
    await waitFor(() => $("#hold-ended"), "released");
    expect($("#hold-ended")?.textContent).toBe("Réservation annulée");
    const del = backend.calls.filter((c) => c.method === "DELETE");
    expect(del).toHaveLength(1);
    expect(del[0].path).toMatch(/^\/v1\/holds\/0{8}-/);
  });

  it("gives the places back when the tab is closed, with a request that outlives the page", async () => {
    start("/slot/2026-12-05T10:00");
    await waitFor(() => $("form.tickets"), "ticket form");
    await type($("#q-adult") as HTMLInputElement, "2");
    await click($("#continue"));
    await waitFor(() => $("#countdown"), "checkout");
    dispatchEvent(new Event("pagehide"));
    const del = await waitFor(() => backend.calls.find((c) => c.method === "DELETE"), "DELETE on pagehide");
    expect(del.keepalive).toBe(true);
    expect(del.path).toMatch(/^\/v1\/holds\//);
  });

  it("says when the hold ran out and offers to start again", async () => {
    start("/slot/2026-12-05T10:00");
    await waitFor(() => $("form.tickets"), "ticket form");
    await type($("#q-adult") as HTMLInputElement, "1");
    await click($("#continue"));
    await waitFor(() => $("#countdown"), "checkout");
    // The hold's time runs out (as the server says it does).
    const held = JSON.parse(sessionStorage.getItem(Object.keys(sessionStorage).find((k) => k.startsWith("hold:"))!)!);
    render(null, root);
    held.expires_at = new Date(Date.now() + 1200).toISOString();
    sessionStorage.setItem(`hold:${held.hold_id}`, JSON.stringify(held));
    start(`/checkout/${held.hold_id}`);
    await waitFor(() => $("#hold-ended"), "expired", 5000);
    expect($("#hold-ended")?.textContent).toBe("Vos places ont été libérées");
    expect($('a[href="/slot/2026-12-05T10:00"]')?.textContent).toBe("Recommencer");
  });
});

describe("after payment", () => {
  it("waits on the return page until the payment is confirmed, then opens the booking", async () => {
    start("/return/co_123", 50);
    await waitFor(() => $("#return-waiting"), "waiting");
    backend.checkoutState = "confirmed";
    await waitFor(() => location.pathname === "/booking/TOKEN123", "booking page");
    await waitFor(() => $$("li.ticket").length === 3, "tickets");
    expect($("#confirmed")?.textContent).toBe(
      "Merci ! Votre réservation est confirmée. Vos billets ont été envoyés à alice@example.org.",
    );
  });

  it("shows the tickets with QR codes and cancels one after a confirmation", async () => {
    start("/booking/TOKEN123");
    await waitFor(() => $$("img.qr").length === 3, "three QR codes");
    expect($("img.qr")?.getAttribute("alt")).toBe("QR code du billet 1");
    expect($("img.qr")?.getAttribute("src")).toMatch(/^data:image\/svg\+xml/);
    expect($("#pdf")?.getAttribute("href")).toBe("/v1/bookings/TOKEN123/tickets.pdf");
    expect($("#ics")?.getAttribute("href")).toBe("/v1/bookings/TOKEN123/booking.ics");
    expect($("#deadline")?.textContent).toMatch(/^Annulation possible jusqu'au/);
    expect(plain($("#booking-summary")?.textContent)).toContain("Total payé : 30,00 €");

    await click($("#cancel-some"));
    await waitFor(() => $("#cancel-error"), "nothing ticked");
    await click($("#c-t-1"));
    await click($("#cancel-some"));
    const confirm = await waitFor(() => $("#confirm-cancel"), "confirmation step");
    expect(plain(confirm.textContent)).toContain("Annuler 1 billet(s) ? Remboursement : 15,00 €.");
    expect(backend.calls.some((c) => c.path.endsWith("/cancel"))).toBe(false);
    await click($("#confirm-yes"));
    await waitFor(() => $('li[data-ticket="t-1"].cancelled'), "ticket 1 cancelled");
    const cancel = backend.calls.find((c) => c.path.endsWith("/cancel"))!;
    expect(cancel.body).toEqual({ ticket_ids: ["t-1"] });
    expect(cancel.headers["idempotency-key"]).toBeTruthy();
    expect(plain($("#booking-status")?.textContent)).toBe("1 billet(s) annulé(s). Remboursement de 15,00 € en cours.");
    expect(plain($("#refunded")?.textContent)).toBe("Remboursé : 15,00 €");
    expect($$("img.qr")).toHaveLength(2);

    await click($("#resend"));
    await waitFor(() => $("#booking-status")?.textContent === "E-mail renvoyé à alice@example.org.", "resent");
  });

  it("says when the payment failed, or came too late and is refunded", async () => {
    backend.checkoutState = "failed";
    start("/return/co_123", 50);
    await waitFor(() => byText("p", "Le paiement n'a pas abouti."), "failed");
    render(null, root);
    backend.checkoutState = "refunded";
    start("/return/co_123", 50);
    await waitFor(() => byText("p", "intégralement remboursé"), "refunded");
  });

  it("says when the places were released before the visitor paid", async () => {
    start("/slot/2026-12-05T10:00");
    await waitFor(() => $("form.tickets"), "ticket form");
    await type($("#q-adult") as HTMLInputElement, "1");
    await click($("#continue"));
    await waitFor(() => $("#countdown"), "checkout");
    backend.holds.clear(); // the server let the hold go (410 hold_expired)
    await type($("#f-name") as HTMLInputElement, "Alice Martin");
    await type($("#f-email") as HTMLInputElement, "alice@example.org");
    await click($("#f-terms"));
    await click($("#pay"));
    await waitFor(() => $("#hold-ended")?.textContent === "Vos places ont été libérées", "expired");
    expect(redirects).toEqual([]);
  });

  it("says so when a booking link is not valid", async () => {
    start("/booking/forged");
    await waitFor(() => byText("p", "Ce lien de réservation n'est pas valable."), "unknown booking");
  });

  it("turns places offered from the waiting list into a checkout, within the party", async () => {
    start("/offer/OFFER1");
    await waitFor(() => $("form.tickets"), "offer's ticket form");
    expect($("h1")?.textContent).toBe("Des places se sont libérées pour vous");
    expect(root.textContent).toContain("2 places sont réservées pour vous jusqu'à");
    await type($("#q-adult") as HTMLInputElement, "3");
    await click($("#continue"));
    await waitFor(() => $("#cart-error")?.textContent === "Au plus 2 entrées par commande.", "party limit");
    await type($("#q-adult") as HTMLInputElement, "2");
    await click($("#continue"));
    await waitFor(() => $("#countdown"), "checkout for the offer");
    const call = backend.calls.find((c) => c.path === "/v1/offers/OFFER1/hold")!;
    expect(call.body).toEqual({ items: [{ product_id: "adult", quantity: 2 }] });
    expect(call.headers["idempotency-key"]).toBeTruthy();
  });

  it("says when an offer has expired", async () => {
    start("/offer/OFFER-OLD");
    await waitFor(() => byText("p", "Cette offre a expiré"), "expired offer");
    expect($("form.tickets")).toBeNull();
  });

  it("joins the waiting list of a sold-out time", async () => {
    start("/waitlist/2026-12-05T11:00?party=3");
    await waitFor(() => $("#w-email"), "waitlist form");
    expect(($("#w-party") as HTMLInputElement).value).toBe("3");
    await click($("#join"));
    await waitFor(() => $("#w-email-error"), "email error");
    await type($("#w-email") as HTMLInputElement, "bob@example.org");
    await click($("#join"));
    await waitFor(() => $("#waitlist-done"), "joined");
    expect($("#waitlist-done")?.textContent).toBe("Vous êtes inscrit(e), en position 3. Nous vous écrirons à bob@example.org.");
    const call = backend.calls.find((c) => c.path === "/v1/waitlist")!;
    expect(call.body).toEqual({ slot_id: "2026-12-05T11:00", email: "bob@example.org", party: 3, language: "fr" });
  });
});

/** A stand-in for the browser's EventSource: the test plays the server. */
class FakeStream {
  listeners = new Map<string, ((e: MessageEvent) => void)[]>();
  onopen: ((e: Event) => void) | null = null;
  onerror: ((e: Event) => void) | null = null;
  closed = false;
  constructor(public url: string) {}
  addEventListener(type: string, listener: (e: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  close() {
    this.closed = true;
  }
  emit(type: string, data: unknown) {
    for (const l of this.listeners.get(type) ?? []) l(new MessageEvent(type, { data: JSON.stringify(data) }));
  }
}

describe("places pushed by the server", () => {
  it("change on the day page as they are pushed, with no polling, and polling resumes when the stream fails", async () => {
    const streams: FakeStream[] = [];
    history.replaceState(null, "", "/day/2026-12-05");
    const api = new Api(backend.fetch, "", (url) => {
      const s = new FakeStream(url);
      streams.push(s);
      return s;
    });
    render(<App api={api} pollMs={40} redirect={(u) => redirects.push(u)} />, root);
    await waitFor(() => streams.length === 1, "the page to listen");
    expect(streams[0].url).toBe("/v1/events/availability?date=2026-12-05");
    const day = await backend.fetch("/v1/availability?date=2026-12-05").then((r) => r.json());
    const first = day.slots.find((s: { past: boolean }) => !s.past);
    streams[0].onopen?.(new Event("open"));
    streams[0].emit("snapshot", { ...day, slots: day.slots.map((s: object) => ({ ...s })) });
    await waitFor(() => byText("p.hint", "en direct"), "the live line");
    // Live: the page stops asking.
    await new Promise((r) => setTimeout(r, 50));
    const asked = backend.calls.filter((c) => c.path.startsWith("/v1/availability?")).length;
    await new Promise((r) => setTimeout(r, 200));
    expect(backend.calls.filter((c) => c.path.startsWith("/v1/availability?")).length).toBe(asked);
    // A place taken elsewhere shows at once.
    streams[0].emit("changed", { date: "2026-12-05", slots: [{ ...first, available: 3 }] });
    await waitFor(
      () => plain($(`li[data-slot="${first.slot_id}"] .places`)?.textContent) === "Plus que 3 places",
      "the pushed figure",
    );
    // Another day's change is not this page's.
    streams[0].emit("changed", { date: "2026-12-06", slots: [{ ...first, available: 1 }] });
    await tick();
    expect(plain($(`li[data-slot="${first.slot_id}"] .places`)?.textContent)).toBe("Plus que 3 places");
    // The stream fails: the page polls again and says how old its figures are.
    streams[0].onerror?.(new Event("error"));
    await waitFor(() => byText("p.hint", "Places restantes à"), "polling again");
    await waitFor(
      () => backend.calls.filter((c) => c.path.startsWith("/v1/availability?")).length > asked,
      "a poll",
    );
  });
});
