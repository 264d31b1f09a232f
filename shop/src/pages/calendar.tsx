// The calendar of bookable days, a month at a time.
import { useState } from "preact/hooks";
import type { CalendarDay } from "../api";
import { ErrorText, Heading, Link, useShop } from "../app";
import { addDays, addMonths, daysInMonth, longDate, monthTitle, museumToday, weekdayIndex, weekdayNames } from "../format";
import { usePoll } from "../hooks";

export type DayStatus = "open" | "closed" | "sold_out" | "unavailable";

/** What a calendar day offers the visitor. */
export function dayStatus(day: CalendarDay): DayStatus {
  if (day.closed) return "closed";
  if (day.sold_out) return "sold_out";
  if (day.available > 0) return "open";
  return "unavailable";
}

function initialMonth(today: string): string {
  const q = new URLSearchParams(location.search).get("month");
  return q && /^\d{4}-\d{2}$/.test(q) ? q : today.slice(0, 7);
}

export function CalendarPage() {
  const shop = useShop();
  const { t, lang, api, tz, config } = shop;
  const today = museumToday(tz, new Date(shop.now()));
  const [month, setMonth] = useState(() => initialMonth(today));
  const cal = usePoll(() => api.calendar(month + "-01", daysInMonth(month)), shop.pollMs * 3, [month]);
  const lastMonth = addDays(today, Math.max(0, config.booking_horizon_days - 1)).slice(0, 7);
  const go = (n: number) => {
    const next = addMonths(month, n);
    setMonth(next);
    history.replaceState(null, "", next === today.slice(0, 7) ? "/" : `/?month=${next}`);
  };
  const days = cal.data?.days ?? [];
  const first = month + "-01";
  const lead = weekdayIndex(first);
  const cells: (CalendarDay | null)[] = [...Array(lead).fill(null), ...days];
  while (cells.length % 7 !== 0) cells.push(null);
  const weeks: (CalendarDay | null)[][] = [];
  for (let i = 0; i < cells.length; i += 7) weeks.push(cells.slice(i, i + 7));
  const short = weekdayNames(lang, "short");
  const long = weekdayNames(lang, "long");

  return (
    <section aria-labelledby="page-title">
      <Heading>{t("calendar_title")}</Heading>
      <p>{t("calendar_intro")}</p>
      <div class="month-nav">
        <button type="button" onClick={() => go(-1)} disabled={month <= today.slice(0, 7)}>
          <span aria-hidden="true">‹ </span>
          {t("prev_month")}
        </button>
        <h2 id="month-title" aria-live="polite">
          {monthTitle(lang, month)}
        </h2>
        <button type="button" onClick={() => go(1)} disabled={month >= lastMonth}>
          {t("next_month")}
          <span aria-hidden="true"> ›</span>
        </button>
      </div>
      {cal.error ? <ErrorText error={cal.error} /> : null}
      {!cal.data && !cal.error ? <p>{t("loading")}</p> : null}
      {cal.data ? (
        <table class="calendar" aria-labelledby="month-title">
          <thead>
            <tr>
              {short.map((s, i) => (
                <th scope="col" key={s}>
                  <abbr title={long[i]}>{s}</abbr>
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {weeks.map((week, w) => (
              <tr key={w}>
                {week.map((day, i) => (
                  <td key={i}>{day ? <DayCell day={day} /> : null}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <ul class="legend" aria-label={t("legend")}>
        <li>
          <span class="swatch open" aria-hidden="true" /> {t("legend_open")}
        </li>
        <li>
          <span class="swatch sold_out" aria-hidden="true" /> {t("day_sold_out")}
        </li>
        <li>
          <span class="swatch closed" aria-hidden="true" /> {t("day_closed")}
        </li>
      </ul>
    </section>
  );
}

function DayCell({ day }: { day: CalendarDay }) {
  const { t, lang } = useShop();
  const status = dayStatus(day);
  const n = Number(day.date.slice(8, 10));
  const words = longDate(lang, day.date);
  if (status === "open" || status === "sold_out") {
    const label =
      status === "open" ? t("day_label_open", { date: words, n: day.available }) : t("day_label_sold_out", { date: words });
    return (
      <Link href={`/day/${day.date}`} class={`day ${status}`}>
        <span class="num" aria-hidden="true">
          {n}
        </span>
        <span class="mark" aria-hidden="true">
          {status === "open" ? day.available : t("day_sold_out")}
        </span>
        <span class="visually-hidden">{label}</span>
      </Link>
    );
  }
  const label = status === "closed" ? t("day_label_closed", { date: words }) : t("day_label_unavailable", { date: words });
  return (
    <span class={`day ${status}`} role="img" aria-label={label} data-date={day.date}>
      <span class="num" aria-hidden="true">
        {n}
      </span>
      <span class="mark" aria-hidden="true">
        {status === "closed" ? t("day_closed") : ""}
      </span>
    </span>
  );
}
