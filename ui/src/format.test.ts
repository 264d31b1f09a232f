import { describe, expect, it } from "vitest";
import { formatAge, formatTime, offsetFromSlot, setMuseumTimeZone, setMuseumUtcOffset } from "./format";

describe("formatAge", () => {
  const now = "2026-12-02T10:05:00Z";
  it("reads the engine's clock, not the webview's", () => {
    expect(formatAge("2026-12-02T10:04:18Z", now)).toBe("42 s ago");
    expect(formatAge("2026-12-02T10:00:00Z", now)).toBe("5 min ago");
    expect(formatAge("2026-12-02T08:00:00Z", now)).toBe("2 h ago");
    expect(formatAge("2026-12-02T10:05:00Z", now)).toBe("just now");
    expect(formatAge(null, now)).toBe("never");
  });
});

describe("formatTime", () => {
  it("shows the museum's wall clock once the zone is known", () => {
    setMuseumTimeZone("Europe/Paris");
    expect(formatTime("2026-12-09T10:05:03Z")).toBe("11:05:03");
    expect(formatTime("2027-07-07T09:05:00Z", false)).toBe("11:05");
    setMuseumTimeZone("Not/AZone");
    expect(formatTime("2026-12-09T10:05:03Z")).toMatch(/^\d\d:05:03$/);
    setMuseumTimeZone(undefined);
  });
});

describe("museum time without a zone name", () => {
  it("reads the offset off a slot", () => {
    expect(offsetFromSlot({ label: "11:00", starts_at: "2026-12-09T10:00:00Z" })).toBe(60);
    expect(offsetFromSlot({ label: "11:00", starts_at: "2027-07-07T09:00:00Z" })).toBe(120);
    expect(offsetFromSlot({ label: "09:30", starts_at: "2026-12-09T14:30:00Z" })).toBe(-300);
    expect(offsetFromSlot({ label: "00:30", starts_at: "2026-12-08T23:30:00Z" })).toBe(60);
    expect(offsetFromSlot({ label: "late", starts_at: "x" })).toBeNull();
  });
  it("formats on that offset", () => {
    setMuseumUtcOffset(60);
    expect(formatTime("2026-12-09T10:05:03Z")).toBe("11:05:03");
    setMuseumUtcOffset(undefined);
  });
});
