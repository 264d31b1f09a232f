// One day's entry times, live: places left, "few left", sold out.
import type { SlotAvailability } from "../api";
import { ErrorText, Heading, Link, useShop } from "../app";
import { longDate, time, timeSeconds } from "../format";
import { useAvailability, useNow } from "../hooks";

export type SlotStatus = "open" | "few" | "sold_out" | "over";

/** "Few left": at most a tenth of the time's capacity, or 10 places. */
export function slotStatus(s: SlotAvailability): SlotStatus {
  if (s.past) return "over";
  if (s.available <= 0) return "sold_out";
  if (s.available <= Math.max(10, Math.floor(s.capacity / 10))) return "few";
  return "open";
}

export function placesText(t: ReturnType<typeof useShop>["t"], s: SlotAvailability): string {
  switch (slotStatus(s)) {
    case "over":
      return t("time_over");
    case "sold_out":
      return t("sold_out");
    case "few":
      return t("few_left", { n: s.available });
    default:
      return t("places_left", { n: s.available });
  }
}

/**
 * How old the places shown are, on the museum's clock: a visitor must never
 * take numbers from minutes ago for live ones.
 */
function Freshness({ at, failing, live }: { at: number | null; failing: boolean; live: boolean }) {
  const shop = useShop();
  const { t, lang, tz } = shop;
  useNow(1000);
  if (live) return <p class="hint" data-live="true">{t("places_live")}</p>;
  if (at === null) return null;
  // The device clock read `at`; shown on the server's clock like every time.
  const shown = timeSeconds(lang, new Date(at + (shop.now() - Date.now())), tz);
  const stale = failing || Date.now() - at > 3 * shop.pollMs;
  return stale ? (
    <p class="hint stale" role="status">
      {t("refresh_stale", { time: shown })}
    </p>
  ) : (
    <p class="hint">{t("refreshed", { time: shown })}</p>
  );
}

export function DayPage({ date }: { date: string }) {
  const shop = useShop();
  const { t, lang, api, tz } = shop;
  const day = useAvailability(api, date, shop.pollMs);
  const slots = (day.data?.slots ?? []).filter((s) => !s.past);
  return (
    <section aria-labelledby="page-title">
      <Heading>{t("day_title", { date: longDate(lang, date) })}</Heading>
      <p>
        <Link href={`/?month=${date.slice(0, 7)}`}>{t("back_calendar")}</Link>
      </p>
      {day.error ? <ErrorText error={day.error} /> : null}
      {!day.data && !day.error ? <p>{t("loading")}</p> : null}
      {day.data?.closed ? <p>{t("day_closed_text")}</p> : null}
      {day.data && !day.data.closed && slots.length === 0 ? <p>{t("day_none")}</p> : null}
      {slots.length > 0 ? (
        <>
          <h2>{t("times")}</h2>
          <Freshness at={day.at} failing={Boolean(day.error)} live={day.live} />
          <ul class="times">
            {slots.map((s) => {
              const status = slotStatus(s);
              const at = time(lang, s.starts_at, tz);
              const places = placesText(t, s);
              return (
                <li key={s.slot_id} class={`time ${status}`} data-slot={s.slot_id}>
                  {status === "sold_out" ? (
                    <>
                      <span class="at">{at}</span>
                      <span class="places">{places}</span>
                      <Link href={`/waitlist/${s.slot_id}`}>
                        {t("join_waitlist")}
                        <span class="visually-hidden"> ({at})</span>
                      </Link>
                    </>
                  ) : (
                    <Link href={`/slot/${s.slot_id}`} class="pick">
                      <span class="at">{at}</span>
                      <span class="places">{places}</span>
                    </Link>
                  )}
                </li>
              );
            })}
          </ul>
        </>
      ) : null}
    </section>
  );
}
