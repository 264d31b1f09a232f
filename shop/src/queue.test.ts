import { beforeEach, describe, expect, it } from "vitest";
import type { PlaceStatus, ShopConfig } from "./api";
import { forget, keep, kept, passFor, queueGate, roomFor } from "./queue";

const config = {
  waiting_rooms: [
    {
      id: "vermeer",
      name: "Vermeer",
      from: "2027-02-01",
      until: "2027-02-03",
      opens_at: "2027-01-15T09:00:00Z",
      phase: "open",
      waiting: 0,
      in_shop: 0,
      admitted: 0,
      rate_per_minute: 600,
    },
  ],
} as unknown as ShopConfig;

const status = (over: Partial<PlaceStatus>): PlaceStatus => ({
  room: "vermeer",
  state: "waiting",
  opens_at: "2027-01-15T09:00:00Z",
  place: "PLACE",
  position: 3,
  ahead: 2,
  waiting: 10,
  eta_seconds: 30,
  eta_error_seconds: 22,
  rate_per_minute: 600,
  pass: null,
  pass_until: null,
  poll_after_ms: 2000,
  ...over,
});

describe("waiting rooms in the shop", () => {
  beforeEach(() => forget("vermeer"));

  it("sends a sale's days to its line and lets other days through", () => {
    expect(roomFor(config, "2027-02-02")?.id).toBe("vermeer");
    expect(roomFor(config, "2027-02-04")).toBeUndefined();
    expect(queueGate(config, "2027-02-01", Date.parse("2027-01-15T10:00:00Z"))).toBe("/queue/vermeer?date=2027-02-01");
    expect(queueGate(config, "2027-01-31", Date.parse("2027-01-15T10:00:00Z"))).toBeNull();
  });

  it("books with a pass only inside its window, and a waiting place is no pass", () => {
    const at = Date.parse("2027-01-15T10:00:00Z");
    keep("vermeer", status({}));
    expect(kept("vermeer")?.place).toBe("PLACE");
    expect(passFor(config, "2027-02-01T11:00", at)).toBeUndefined();
    keep("vermeer", status({ state: "admitted", pass: "PASS", pass_until: "2027-01-15T10:10:00Z" }));
    expect(passFor(config, "2027-02-01T11:00", at)).toBe("PASS");
    expect(queueGate(config, "2027-02-01", at)).toBeNull();
    // Window over: back to the line.
    const later = Date.parse("2027-01-15T10:10:00Z");
    expect(passFor(config, "2027-02-01T11:00", later)).toBeUndefined();
    expect(queueGate(config, "2027-02-01", later)).toBe("/queue/vermeer?date=2027-02-01");
  });
});
