import { describe, expect, it } from "vitest";
import { centsToInput, formatMoney, formatSigned, parseMoney } from "./money";

describe("formatMoney", () => {
  it("shows two decimals", () => {
    expect(formatMoney(1500)).toBe("15.00 €");
    expect(formatMoney(5)).toBe("0.05 €");
    expect(formatMoney(0)).toBe("0.00 €");
    expect(formatMoney(-250)).toBe("-2.50 €");
  });
  it("groups thousands and names other currencies", () => {
    expect(formatMoney(123456789, "USD")).toBe("1\u202f234\u202f567.89 $");
    expect(formatMoney(100, "SEK")).toBe("1.00 SEK");
  });
  it("signs over/short", () => {
    expect(formatSigned(250)).toBe("+2.50 €");
    expect(formatSigned(-100)).toBe("-1.00 €");
    expect(formatSigned(0)).toBe("0.00 €");
  });
});

describe("parseMoney", () => {
  it("reads what cashiers type", () => {
    expect(parseMoney("50")).toBe(5000);
    expect(parseMoney("50.5")).toBe(5050);
    expect(parseMoney("50.05")).toBe(5005);
    expect(parseMoney("50,50")).toBe(5050);
    expect(parseMoney(" 20 € ")).toBe(2000);
    expect(parseMoney("0.10")).toBe(10);
    expect(parseMoney(".5")).toBe(50);
    expect(parseMoney("7.")).toBe(700);
  });
  it("never goes through floats", () => {
    // 0.29 * 100 is 28.999999999999996 in floating point.
    expect(parseMoney("0.29")).toBe(29);
    expect(parseMoney("1.15")).toBe(115);
    expect(parseMoney("4.35")).toBe(435);
  });
  it("rejects what is not an amount", () => {
    for (const bad of ["", "abc", "-5", "1.234", "1,2,3", "1e3", "12a", ".", "100001"]) {
      expect(parseMoney(bad), bad).toBeNull();
    }
  });
  it("round-trips with centsToInput", () => {
    for (const c of [0, 1, 99, 100, 4370, 100000]) expect(parseMoney(centsToInput(c))).toBe(c);
  });
});
