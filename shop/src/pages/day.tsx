// One day's entry times, live: places left, "few left", sold out.
import type { SlotAvailability } from "../api";
import { ErrorText, Heading, Link, useShop } from "../app";
import { longDate, time } from "../format";
import { usePoll } from "../hooks";

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

export function DayPage({ date }: { date: string }) {
  const shop = useShop();
  const { t, lang, api, tz } = shop;
  const day = usePoll(() => api.availability(date), shop.pollMs, [date]);
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
          <p class="hint">{t("refreshed")}</p>
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
