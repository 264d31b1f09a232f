// Dates, times and prices for the visitor's language, always on the museum's
// wall clock (its IANA zone), whatever zone the visitor's device is in.
import type { Language, Money } from "./api";

const LOCALES: Record<Language, string> = { fr: "fr-FR", en: "en-GB" };

export function locale(lang: Language) {
  return LOCALES[lang];
}

export function money(lang: Language, m: Money | { amount: number; currency: string }): string {
  return new Intl.NumberFormat(LOCALES[lang], { style: "currency", currency: m.currency }).format(m.amount / 100);
}

/** "5,5 %" / "5.5%" from basis points. */
export function percent(lang: Language, bp: number): string {
  return new Intl.NumberFormat(LOCALES[lang], { style: "percent", maximumFractionDigits: 2 }).format(bp / 10000);
}

/** An instant's time of day in the museum ("10:30"). */
export function time(lang: Language, instant: string | Date, timeZone: string): string {
  return new Intl.DateTimeFormat(LOCALES[lang], { hour: "2-digit", minute: "2-digit", timeZone }).format(
    new Date(instant),
  );
}

/** An instant's time of day in the museum, to the second ("10:30:05"). */
export function timeSeconds(lang: Language, instant: string | Date, timeZone: string): string {
  return new Intl.DateTimeFormat(LOCALES[lang], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZone,
  }).format(new Date(instant));
}

/** An instant's date and time in the museum. */
export function dateTime(lang: Language, instant: string | Date, timeZone: string): { date: string; time: string } {
  const d = new Date(instant);
  return {
    date: new Intl.DateTimeFormat(LOCALES[lang], { weekday: "long", day: "numeric", month: "long", year: "numeric", timeZone }).format(d),
    time: time(lang, d, timeZone),
  };
}

/**
 * A museum day ("2026-12-05") in words. The day is a calendar date, not an
 * instant: it is formatted at noon UTC in UTC, so no zone can shift it.
 */
export function longDate(lang: Language, day: string): string {
  return new Intl.DateTimeFormat(LOCALES[lang], {
    weekday: "long",
    day: "numeric",
    month: "long",
    year: "numeric",
    timeZone: "UTC",
  }).format(civil(day));
}

export function monthTitle(lang: Language, month: string): string {
  return new Intl.DateTimeFormat(LOCALES[lang], { month: "long", year: "numeric", timeZone: "UTC" }).format(
    civil(month + "-01"),
  );
}

/** Monday-first short weekday names ("lun.", "Mon"). */
export function weekdayNames(lang: Language, style: "short" | "long" = "short"): string[] {
  // 2024-01-01 was a Monday.
  return Array.from({ length: 7 }, (_, i) =>
    new Intl.DateTimeFormat(LOCALES[lang], { weekday: style, timeZone: "UTC" }).format(
      new Date(Date.UTC(2024, 0, 1 + i, 12)),
    ),
  );
}

/** "2026-12-05" → that date at noon UTC. */
export function civil(day: string): Date {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d, 12));
}

export function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export function addDays(day: string, n: number): string {
  const d = civil(day);
  d.setUTCDate(d.getUTCDate() + n);
  return isoDay(d);
}

/** "2026-12" → "2027-01" for n = 1. */
export function addMonths(month: string, n: number): string {
  const [y, m] = month.split("-").map(Number);
  const d = new Date(Date.UTC(y, m - 1 + n, 1, 12));
  return d.toISOString().slice(0, 7);
}

export function daysInMonth(month: string): number {
  const [y, m] = month.split("-").map(Number);
  return new Date(Date.UTC(y, m, 0, 12)).getUTCDate();
}

/** 0 = Monday … 6 = Sunday. */
export function weekdayIndex(day: string): number {
  return (civil(day).getUTCDay() + 6) % 7;
}

/** The museum's today ("2026-12-02") at an instant. */
export function museumToday(timeZone: string, now: Date = new Date()): string {
  // en-CA formats as YYYY-MM-DD.
  return new Intl.DateTimeFormat("en-CA", { year: "numeric", month: "2-digit", day: "2-digit", timeZone }).format(now);
}

/** "10:30" from a slot id "2026-12-05T10:30" (the museum's own wall clock). */
export function slotTime(slotId: string): string {
  return slotId.slice(11, 16);
}

export function slotDate(slotId: string): string {
  return slotId.slice(0, 10);
}

/** "4:05" / "0:09" for a countdown. */
export function countdown(ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** Minutes and seconds in words, for screen readers ("4 minutes"). */
export function durationWords(lang: Language, ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const nf = (n: number, unit: "minute" | "second") =>
    new Intl.NumberFormat(LOCALES[lang], { style: "unit", unit, unitDisplay: "long" }).format(n);
  if (s >= 60) return nf(Math.ceil(s / 60), "minute");
  return nf(s, "second");
}
