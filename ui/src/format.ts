// Times on screen. Instants come from the engine as RFC 3339 UTC; ages are
// measured against the engine's own `now` (which honours the demo/test clock
// offset), never against the webview's clock.

let museumZone: string | undefined;
let museumOffsetMin: number | undefined;

/** Times on screen are the museum's wall clock (slots are in its zone), not
 * the machine's; set once the engine's status names the zone. */
export function setMuseumTimeZone(zone: string | null | undefined) {
  try {
    museumZone = zone ? (new Intl.DateTimeFormat("en-GB", { timeZone: zone }), zone) : undefined;
  } catch {
    museumZone = undefined;
  }
}

/**
 * The museum's UTC offset today, from one of today's slots: its label is the
 * museum's wall clock ("11:00"), `starts_at` the same instant in UTC. Used
 * while the engine's status does not name the zone; DST never changes
 * during opening hours, so one offset holds for the day.
 */
export function offsetFromSlot(slot: { label: string; starts_at: string }): number | null {
  const m = /^(\d{1,2}):(\d{2})$/.exec(slot.label.trim());
  const start = new Date(slot.starts_at);
  if (!m || Number.isNaN(start.getTime())) return null;
  const wall = Number(m[1]) * 60 + Number(m[2]);
  const utc = start.getUTCHours() * 60 + start.getUTCMinutes();
  // Wrap into -12 h … +14 h: a slot just after midnight UTC is still "today".
  let diff = wall - utc;
  if (diff > 14 * 60) diff -= 24 * 60;
  if (diff < -12 * 60) diff += 24 * 60;
  return diff;
}

export function setMuseumUtcOffset(minutes: number | null | undefined) {
  museumOffsetMin = minutes ?? undefined;
}

export function knowsMuseumTime(): boolean {
  return museumZone !== undefined || museumOffsetMin !== undefined;
}

export function formatTime(ts: string | null | undefined, withSeconds = true): string {
  if (!ts) return "—";
  let d = new Date(ts);
  if (Number.isNaN(d.getTime())) return "—";
  let timeZone = museumZone;
  if (!timeZone && museumOffsetMin !== undefined) {
    d = new Date(d.getTime() + museumOffsetMin * 60_000);
    timeZone = "UTC";
  }
  return d.toLocaleTimeString("en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    second: withSeconds ? "2-digit" : undefined,
    hourCycle: "h23",
    timeZone,
  });
}

/** "never", "just now", "42 s ago", "5 min ago", "2 h ago". */
export function formatAge(ts: string | null | undefined, now: string): string {
  if (!ts) return "never";
  const ms = Date.parse(now) - Date.parse(ts);
  if (Number.isNaN(ms)) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 2) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

/** Today's date for a date field, in the webview's zone ("2026-12-02"). */
export function todayIso(now: string | Date = new Date()): string {
  const d = typeof now === "string" ? new Date(now) : now;
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
