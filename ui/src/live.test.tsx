// Figures on screen follow the engine's change events, not a polling loop:
// a sale made elsewhere (pushed by the server to the engine) shows on the
// entry-time list as soon as the engine says so, and only then.
import { act } from "preact/test-utils";
import { describe, expect, it } from "vitest";
import { FakeBackend } from "./fake-backend";
import { appHarness } from "./test-harness";

const { byId, mount, find, submit } = appHarness();

async function type(id: string, text: string) {
  const el = (await find(id)) as HTMLInputElement;
  await act(async () => {
    el.value = text;
    el.dispatchEvent(new Event("input", { bubbles: true }));
  });
}

async function until(check: () => boolean, what: string, timeoutMs = 2000) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await act(() => new Promise((r) => setTimeout(r, 20)));
  }
}

function firstSlotText(): string {
  return byId("slot-remaining")?.textContent ?? "";
}

describe("live figures", () => {
  it("places left change when the engine reports it, with no interaction", async () => {
    const fake = new FakeBackend({ latencyMs: 0 });
    await mount(fake);
    await type("pin-input", "1111");
    await submit("pin-input");
    await type("float-input", "150");
    await submit("float-input");
    await find("slot-remaining");
    const before = firstSlotText();
    const first = fake.slots.find((s) => !s.closed)!;
    // An online order elsewhere: the engine's replica changes...
    first.remaining -= 5;
    first.lease_left -= 1;
    // ...and nothing reads it until the engine says so (no polling).
    await act(() => new Promise((r) => setTimeout(r, 300)));
    expect(firstSlotText()).toBe(before);
    fake.emitChange("slots");
    await until(() => firstSlotText() === `${first.remaining} left`, "the new figure");
    expect(byId("slot-lease")?.textContent).toBe(`this till: ${first.lease_left}`);
  });

  it("the status bar says whether changes are pushed or polled", async () => {
    const fake = new FakeBackend({ latencyMs: 0 });
    await mount(fake);
    const pill = await find("push-state");
    expect(pill.dataset.live).toBe("true");
    expect(pill.textContent).toBe("Live updates");
  });
});

describe("gate peers", () => {
  it("the offline banner says whether the other gates still share what they admit", async () => {
    const { offlineText } = await import("./screens/gate");
    const base = { online: false } as import("./api").Status;
    expect(offlineText({ ...base, gate_peers: [] })).toMatch(/caught when the network returns/);
    expect(
      offlineText({
        ...base,
        gate_peers: [
          { url: "http://10.0.0.2:7070", reachable: true },
          { url: "http://10.0.0.3:7070", reachable: true },
        ],
      }),
    ).toMatch(/the 2 other gates share what they admit/);
    expect(
      offlineText({
        ...base,
        gate_peers: [
          { url: "http://10.0.0.2:7070", reachable: true },
          { url: "http://10.0.0.3:7070", reachable: false },
        ],
      }),
    ).toMatch(/1 of 2 other gates answer/);
  });
});
