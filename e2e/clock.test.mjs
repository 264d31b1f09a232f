// node --test e2e/clock.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";
import { testClock, zonedInstant } from "./clock.mjs";

test("11:05 in Paris is 10:05 UTC in winter and 09:05 UTC in summer", () => {
  assert.equal(zonedInstant(2026, 12, 2, 11, 5, "Europe/Paris").toISOString(), "2026-12-02T10:05:00.000Z");
  assert.equal(zonedInstant(2027, 7, 7, 11, 5, "Europe/Paris").toISOString(), "2027-07-07T09:05:00.000Z");
});

test("lands on a Wednesday at least a week ahead", () => {
  const now = new Date("2026-11-30T15:00:00Z"); // a Monday
  const { target, offsetSecs, date } = testClock({ now });
  assert.equal(date, "2026-12-09");
  assert.equal(target.toISOString(), "2026-12-09T10:05:00.000Z");
  assert.equal(offsetSecs, (target - now) / 1000);
});

test("skips Wednesdays that are holidays", () => {
  // 25 Dec 2030 and 1 Jan 2031 are both Wednesdays.
  const { date } = testClock({ now: new Date("2030-12-17T08:00:00Z") });
  assert.equal(date, "2031-01-08");
});
