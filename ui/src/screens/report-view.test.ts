import { describe, expect, it } from "vitest";
import { formatCell, humanKey } from "./report-view";

describe("day report cells", () => {
  it("shows amounts as money and counts as numbers", () => {
    expect(formatCell("gross", 4500)).toBe("45.00 €");
    expect(formatCell("over_short", -50)).toBe("-0.50 €");
    expect(formatCell("cash_total", 19500)).toBe("195.00 €");
    expect(formatCell("sales_count", 12)).toBe("12");
    expect(formatCell("admissions", 7)).toBe("7");
    expect(formatCell("granted", 15)).toBe("15");
  });
  it("words the rest", () => {
    expect(formatCell("late", true)).toBe("yes");
    expect(formatCell("x", null)).toBe("—");
    expect(humanKey("missing_uploads")).toBe("Missing uploads");
  });
});
