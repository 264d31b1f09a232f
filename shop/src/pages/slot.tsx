// Ticket choice for one entry time, then the hold. When the time sells out
// under the visitor, the page says so and offers the nearest times.
import { useEffect, useRef, useState } from "preact/hooks";
import { forget, passFor, queueGate, roomFor } from "../queue";
import { ApiError, newKey, type CartLine, type Catalogue, type Nearest } from "../api";
import { ErrorText, Heading, Link, useShop } from "../app";
import { longDate, slotDate, slotTime, time } from "../format";
import { useAvailability } from "../hooks";
import { loadDraft, saveDraft, saveHold } from "../session";
import { TicketChooser } from "../tickets";
import { placesText, slotStatus } from "./day";

let catalogueCache: Promise<Catalogue> | null = null;

/** The catalogue, once per page load (it changes only with a new fixture). */
export function loadCatalogue(api: { catalogue(): Promise<Catalogue> }): Promise<Catalogue> {
  if (!catalogueCache) {
    catalogueCache = api.catalogue();
    catalogueCache.catch(() => (catalogueCache = null));
  }
  return catalogueCache;
}

export function resetCatalogueCache() {
  catalogueCache = null;
}

/**
 * One Idempotency-Key per attempt: the same cart sent again (a retry after a
 * network failure) reuses it, a changed cart gets a new one.
 */
export function useAttemptKey() {
  const last = useRef<{ body: string; key: string } | null>(null);
  return (body: unknown) => {
    const text = JSON.stringify(body);
    if (!last.current || last.current.body !== text) last.current = { body: text, key: newKey() };
    return last.current.key;
  };
}

export function NearestTimes({ nearest }: { nearest: Nearest }) {
  const { t, lang, tz } = useShop();
  if (nearest.slots.length === 0) return <p>{t("no_nearest")}</p>;
  return (
    <>
      <h2 id="nearest-title">{t("nearest_title")}</h2>
      <ul class="times nearest" aria-labelledby="nearest-title">
        {nearest.slots.map((s) => {
          const at = time(lang, s.starts_at, tz);
          const sameDay = slotDate(s.slot_id) === slotDate(nearest.slot_id);
          const when = sameDay ? at : `${longDate(lang, slotDate(s.slot_id))}, ${at}`;
          return (
            <li key={s.slot_id} class={`time ${slotStatus(s)}`} data-slot={s.slot_id}>
              <Link href={`/slot/${s.slot_id}`} class="pick">
                <span class="at">{when}</span>
                <span class="places">{placesText(t, s)}</span>
              </Link>
            </li>
          );
        })}
      </ul>
    </>
  );
}

function admissionsOf(items: CartLine[], catalogue: Catalogue | null): number {
  if (!catalogue) return 0;
  return items.reduce((n, l) => n + (catalogue.products.find((p) => p.id === l.product_id)?.admits ?? 0) * l.quantity, 0);
}

const QUEUE_CODES = new Set(["queue_required", "pass_expired", "pass_not_yours", "bad_pass", "pass_over", "pass_used"]);

export function SlotPage({ slotId }: { slotId: string }) {
  const shop = useShop();
  const { t, lang, api, tz } = shop;
  const date = slotDate(slotId);
  const [catalogue, setCatalogue] = useState<Catalogue | null>(null);
  const [failure, setFailure] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [soldOut, setSoldOut] = useState<Nearest | null>(null);
  const [soldOutParty, setSoldOutParty] = useState(0);
  const soldOutRef = useRef<HTMLDivElement>(null);
  const keyFor = useAttemptKey();
  const day = useAvailability(api, date, shop.pollMs);
  useEffect(() => {
    loadCatalogue(api).then(setCatalogue, setFailure);
  }, [api]);
  useEffect(() => {
    if (soldOut) soldOutRef.current?.focus();
  }, [soldOut]);
  const slot = day.data?.slots.find((s) => s.slot_id === slotId) ?? null;
  const at = slot ? time(lang, slot.starts_at, tz) : slotTime(slotId);
  const fullNow = slot !== null && slotStatus(slot) === "sold_out";
  // Sold out while the visitor was choosing: say so and offer the nearest
  // times for the party they were putting together.
  useEffect(() => {
    if (!fullNow || soldOut) return;
    const draft = loadDraft() ?? [];
    const party = Math.max(1, admissionsOf(draft, catalogue));
    setSoldOutParty(party);
    api.nearest(slotId, party).then(setSoldOut, () => setSoldOut({ slot_id: slotId, admissions: party, slots: [] }));
  }, [fullNow, soldOut, catalogue]);

  const hold = async (items: CartLine[], admissions: number) => {
    saveDraft(items);
    setBusy(true);
    setFailure(null);
    const body = { slotId, items };
    try {
      const h = await api.hold(slotId, items, keyFor(body), passFor(shop.config, slotId, shop.now()));
      saveHold(h);
      shop.navigate(`/checkout/${h.hold_id}`);
    } catch (e) {
      const room = roomFor(shop.config, date);
      if (e instanceof ApiError && QUEUE_CODES.has(e.code) && room) {
        // The pass is spent, over or not this browser's: forget it, back
        // to the line.
        forget(room.id);
        const gate = queueGate(shop.config, date, shop.now());
        if (gate) {
          shop.navigate(gate);
          return;
        }
      }
      if (e instanceof ApiError && e.code === "sold_out") {
        setSoldOutParty(admissions);
        try {
          setSoldOut(await api.nearest(slotId, admissions));
        } catch {
          setSoldOut({ slot_id: slotId, admissions, slots: [] });
        }
        void day.refresh();
      } else {
        setFailure(e);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="page-title">
      <Heading>{t("tickets_title", { date: longDate(lang, date), time: at })}</Heading>
      <p>
        <Link href={`/day/${date}`}>{longDate(lang, date)}</Link>
      </p>
      {slot ? (
        <p class={`status ${slotStatus(slot)}`} id="slot-status">
          {placesText(t, slot)}
        </p>
      ) : null}
      {soldOut ? (
        <div class="notice" role="alert" tabIndex={-1} ref={soldOutRef} id="sold-out">
          <p>
            <strong>{t("sold_out_now")}</strong>
          </p>
          <NearestTimes nearest={soldOut} />
          <p>
            <Link href={`/waitlist/${slotId}?party=${soldOutParty}`}>{t("join_waitlist_for", { time: at })}</Link>
          </p>
        </div>
      ) : null}
      {failure ? <ErrorText error={failure} /> : null}
      {day.error && !day.data ? <ErrorText error={day.error} /> : null}
      {!catalogue || !day.data ? (
        <p>{t("loading")}</p>
      ) : fullNow || soldOut ? null : slot && slotStatus(slot) !== "over" ? (
        <TicketChooser catalogue={catalogue} available={slot.available} initial={loadDraft()} busy={busy} onSubmit={hold} onChange={saveDraft} />
      ) : (
        <p>{t("day_none")}</p>
      )}
    </section>
  );
}
