// Where the test stands in time: a Wednesday at least a week ahead, 11:05 in
// the museum's zone (open, mid-morning, not a holiday), expressed as the
// TESSERA_CLOCK_OFFSET_SECS every Tessera process adds to its wall clock.

const HOLIDAYS = new Set(["12-25", "01-01", "05-01"]);

/** The zone's offset from UTC at `instant`, in ms (Paris: +1 h or +2 h). */
function zoneOffsetMs(instant, timeZone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-GB", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    })
      .formatToParts(instant)
      .map((p) => [p.type, p.value]),
  );
  const asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
  return asUtc - Math.floor(instant.getTime() / 1000) * 1000;
}

/** The UTC instant at which it is `hh:mm` on `y-m-d` in `timeZone`. */
export function zonedInstant(y, m, d, hh, mm, timeZone) {
  const guess = new Date(Date.UTC(y, m - 1, d, hh, mm));
  // Twice: the first guess can sit on the other side of a DST change.
  const first = new Date(guess.getTime() - zoneOffsetMs(guess, timeZone));
  return new Date(guess.getTime() - zoneOffsetMs(first, timeZone));
}

/** The test's "now" and the offset that gets every process there. */
export function testClock({ now = new Date(), weekday = 3, hh = 11, mm = 5, timeZone = "Europe/Paris", minDaysAhead = 7 } = {}) {
  const day = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + minDaysAhead));
  for (;;) {
    const key = `${String(day.getUTCMonth() + 1).padStart(2, "0")}-${String(day.getUTCDate()).padStart(2, "0")}`;
    if (day.getUTCDay() === weekday && !HOLIDAYS.has(key)) break;
    day.setUTCDate(day.getUTCDate() + 1);
  }
  const target = zonedInstant(day.getUTCFullYear(), day.getUTCMonth() + 1, day.getUTCDate(), hh, mm, timeZone);
  const offsetSecs = Math.round((target.getTime() - now.getTime()) / 1000);
  return { target, offsetSecs, date: day.toISOString().slice(0, 10) };
}
