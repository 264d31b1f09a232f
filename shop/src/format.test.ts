import { describe, expect, it } from "vitest";
import {
  addDays,
  addMonths,
  countdown,
  dateTime,
  daysInMonth,
  longDate,
  money,
  monthTitle,
  museumToday,
  percent,
  time,
  weekdayIndex,
  weekdayNames,
} from "./format";
import { MESSAGES, productName, t } from "./i18n";
import { totals, vatOf } from "./tickets";
import { CATALOGUE } from "./fake-backend";
import { announcement } from "./pages/checkout";
import { dayStatus } from "./pages/calendar";
import { slotStatus } from "./pages/day";

// Intl output uses narrow no-break spaces in places; compare on plain spaces.
const plain = (s: string) => s.replace(/[\u00a0\u202f]/g, " ");

describe("prices", () => {
  it("are formatted for the language", () => {
    expect(plain(money("fr", { amount: 3000, currency: "EUR" }))).toBe("30,00 €");
    expect(money("en", { amount: 3000, currency: "EUR" })).toBe("€30.00");
    expect(plain(money("fr", { amount: 0, currency: "EUR" }))).toBe("0,00 €");
    expect(plain(percent("fr", 550))).toBe("5,5 %");
    expect(percent("en", 2000)).toBe("20%");
  });

  it("carry VAT rounded per line as the server does", () => {
    // 15.00 at 5.5 %: 1500 * 550 / 10550 = 78.2 → 78.
    expect(vatOf(1500, 550)).toBe(78);
    expect(vatOf(500, 2000)).toBe(83);
    expect(vatOf(0, 550)).toBe(0);
    // 2 adults + 1 child + 1 audio guide.
    const sum = totals(CATALOGUE.products, CATALOGUE.vat_rates, { adult: 2, child: 1, "audio-guide": 1 });
    expect(sum).toEqual({ gross: 3500, tax: vatOf(3000, 550) + 83, admissions: 3, addOns: 1 });
    expect(totals(CATALOGUE.products, CATALOGUE.vat_rates, { family: 1 }).admissions).toBe(4);
  });
});

describe("dates and times", () => {
  it("are the museum's wall clock whatever the device's zone", () => {
    // 09:00 UTC in December is 10:00 in Paris; 08:00 UTC in July is 10:00 too.
    expect(time("fr", "2026-12-05T09:00:00Z", "Europe/Paris")).toBe("10:00");
    expect(time("en", "2026-07-04T08:00:00Z", "Europe/Paris")).toBe("10:00");
    expect(time("fr", "2026-12-05T09:00:00Z", "America/New_York")).toBe("04:00");
    // 23:30 UTC on the 5th is already past midnight in Paris.
    const d = dateTime("fr", "2026-12-05T23:30:00Z", "Europe/Paris");
    expect(d.date).toBe("dimanche 6 décembre 2026");
    expect(d.time).toBe("00:30");
  });

  it("name museum days in words without shifting them", () => {
    expect(longDate("fr", "2026-12-05")).toBe("samedi 5 décembre 2026");
    expect(longDate("en", "2026-12-05")).toBe("Saturday, 5 December 2026");
    expect(monthTitle("fr", "2026-12")).toBe("décembre 2026");
    expect(weekdayNames("en")[0]).toBe("Mon");
    expect(weekdayNames("fr", "long")[6]).toBe("dimanche");
  });

  it("do calendar arithmetic on civil dates", () => {
    expect(addDays("2026-12-31", 1)).toBe("2027-01-01");
    expect(addDays("2026-03-29", 1)).toBe("2026-03-30");
    expect(addMonths("2026-12", 1)).toBe("2027-01");
    expect(addMonths("2026-01", -1)).toBe("2025-12");
    expect(daysInMonth("2028-02")).toBe(29);
    expect(weekdayIndex("2026-12-07")).toBe(0); // a Monday
    expect(weekdayIndex("2026-12-06")).toBe(6);
    // 23:30 UTC on 5 December is already the 6th in Paris.
    expect(museumToday("Europe/Paris", new Date("2026-12-05T23:30:00Z"))).toBe("2026-12-06");
  });

  it("count down in minutes and seconds", () => {
    expect(countdown(600_000)).toBe("10:00");
    expect(countdown(61_001)).toBe("1:02");
    expect(countdown(-5)).toBe("0:00");
  });
});

describe("the countdown's live region", () => {
  it("speaks at 5, 2 and 1 minute and 30 seconds, not every second", () => {
    expect(announcement(301_000, 300_000)).toBe(300);
    expect(announcement(300_000, 299_000)).toBeNull();
    expect(announcement(121_000, 119_000)).toBe(120);
    expect(announcement(61_000, 60_000)).toBe(60);
    expect(announcement(31_000, 30_000)).toBe(30);
    expect(announcement(29_000, 28_000)).toBeNull();
    let spoken = 0;
    for (let ms = 600_000; ms > 0; ms -= 1000) if (announcement(ms, ms - 1000) !== null) spoken++;
    expect(spoken).toBe(4);
  });
});

describe("messages", () => {
  it("exist in French and English for every key", () => {
    expect(Object.keys(MESSAGES.en).sort()).toEqual(Object.keys(MESSAGES.fr).sort());
    for (const lang of ["fr", "en"] as const)
      for (const [k, v] of Object.entries(MESSAGES[lang])) expect(v.trim(), `${lang}.${k}`).not.toBe("");
  });

  it("fill in values", () => {
    expect(t("fr", "places_left", { n: 8 })).toBe("8 places restantes");
    expect(t("en", "pay", { amount: "€30.00" })).toBe("Pay €30.00");
    expect(productName("fr", "child", "Child under 18")).toBe("Enfant de moins de 18 ans");
    expect(productName("fr", "unknown", "Catalogue name")).toBe("Catalogue name");
  });
});

describe("availability words", () => {
  const s = (available: number, capacity = 150, past = false) => ({
    slot_id: "2026-12-05T10:00",
    starts_at: "",
    ends_at: "",
    capacity,
    available,
    sold: capacity - available,
    past,
  });
  it("say few left, sold out and over", () => {
    expect(slotStatus(s(150))).toBe("open");
    expect(slotStatus(s(15))).toBe("few");
    expect(slotStatus(s(0))).toBe("sold_out");
    expect(slotStatus(s(50, 150, true))).toBe("over");
    expect(dayStatus({ date: "x", closed: true, available: 0, capacity: 0, sold_out: false })).toBe("closed");
    expect(dayStatus({ date: "x", closed: false, available: 0, capacity: 9, sold_out: true })).toBe("sold_out");
    expect(dayStatus({ date: "x", closed: false, available: 0, capacity: 9, sold_out: false })).toBe("unavailable");
  });
});
