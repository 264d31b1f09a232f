// Typing while the app is still starting: answers that arrive late (setup
// defaults, the engine's status) fill only what nobody typed, and each
// screen's first field has the focus as soon as the screen is there.
import { render } from "preact";
import { act } from "preact/test-utils";
import { describe, expect, it } from "vitest";
import type { SetupDefaults } from "./api";
import { StatusBar } from "./components/status-bar";
import { FakeBackend } from "./fake-backend";
import { appHarness } from "./test-harness";

const { h, byId, settle, mount, find, submit } = appHarness();

const input = (id: string) => byId(id) as HTMLInputElement;

/** Types like a keyboard: one input event per character, on the field
 * itself, with no wait for the screen in between. */
async function typeKeys(id: string, text: string) {
  const el = (await find(id)) as HTMLInputElement;
  await act(async () => {
    el.focus();
    for (const ch of text) {
      el.value += ch;
      el.dispatchEvent(new Event("input", { bubbles: true }));
    }
  });
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("typing before the initial state arrives", () => {
  it("keeps the text typed in the setup form when the defaults come late", async () => {
    const defaults = deferred<SetupDefaults>();
    const fake = new FakeBackend({ enrolled: false, defaults: defaults.promise });
    await mount(fake);
    await find("setup-form");
    expect(byId("setup-form")?.dataset.ready).toBe("false");

    // The first field has the focus, so typing goes there at once.
    expect(document.activeElement).toBe(byId("setup-server"));
    await act(async () => {
      input("setup-server").value = "";
      input("setup-server").dispatchEvent(new Event("input", { bubbles: true }));
    });
    await typeKeys("setup-server", "http://10.1.2.3:8080");
    await typeKeys("setup-name", " (hall)");

    // The installer's defaults arrive mid-typing.
    await act(async () => {
      defaults.resolve({ server_url: "http://192.0.2.9:9999", code: "WXYZ-0001", name: "Kiosk", printer: "file:/dev/usb/lp0" });
      await defaults.promise;
    });
    await settle();
    expect(byId("setup-form")?.dataset.ready).toBe("true");

    expect(input("setup-server").value).toBe("http://10.1.2.3:8080");
    expect(input("setup-name").value).toBe("Counter 1 (hall)");
    // Fields nobody typed in take the defaults.
    expect(input("setup-code").value).toBe("WXYZ-0001");
    expect(input("setup-printer").value).toBe("file:/dev/usb/lp0");
    // And the focus stayed where the typing was.
    expect(document.activeElement).toBe(byId("setup-name"));

    await submit("setup-code");
    await find("login-form");
    expect(fake.enrolled).toBe(true);
    expect(fake.deviceName).toBe("Counter 1 (hall)");
    expect(fake.printer).toBe("file:/dev/usb/lp0");
  });

  it("keeps a printer typed on the setup screen when the status arrives later", async () => {
    const statusGate = deferred<void>();
    class SlowStatus extends FakeBackend {
      async status() {
        await statusGate.promise;
        return super.status();
      }
    }
    const fake = new SlowStatus();
    fake.printer = "network:192.0.2.1:9100";
    await mount(fake);
    // F4 once the app knows it is enrolled, before the engine's status.
    await find("nav-setup");
    expect(byId("app")?.dataset.ready).toBe("false");
    await act(async () => {
      window.dispatchEvent(new KeyboardEvent("keydown", { key: "F4" }));
    });
    await find("setup-configure");
    const field = input("setup-printer");
    await act(async () => {
      field.value = "";
      field.dispatchEvent(new Event("input", { bubbles: true }));
    });
    await typeKeys("setup-printer", "file:/tmp/receipts");
    await act(async () => statusGate.resolve());
    await find("device-name");
    expect(byId("app")?.dataset.ready).toBe("true");
    expect(input("setup-printer").value).toBe("file:/tmp/receipts");
  });
});

describe("first field focus", () => {
  it("the PIN on the login screen, then the float after login", async () => {
    await mount(new FakeBackend());
    await find("login-form");
    expect(document.activeElement).toBe(byId("pin-input"));
    await typeKeys("pin-input", "1111");
    await submit("pin-input");
    await find("open-shift-form");
    expect(document.activeElement).toBe(byId("float-input"));
    await typeKeys("float-input", "150");
    await submit("float-input");
    await find("sell-screen");
  });

  it("the counted cash when closing, the PIN on the supervisor screen", async () => {
    await mount(new FakeBackend());
    await typeKeys("pin-input", "1111");
    await submit("pin-input");
    await find("open-shift-form");
    await typeKeys("float-input", "150");
    await submit("float-input");
    await find("sell-screen");
    await act(async () => (await find("pane-close")).click());
    await find("close-shift");
    expect(document.activeElement).toBe(byId("counted-cash"));
    await act(async () => (await find("nav-supervisor")).click());
    await find("supervisor-screen");
    expect(document.activeElement).toBe(byId("sup-pin"));
  });
});

describe("status bar", () => {
  const status = {
    device_name: "Counter 1",
    role: "counter" as const,
    museum: "Musée",
    server_url: "http://127.0.0.1:8080",
    online: true,
    last_sync_at: null,
    last_sync_error: null,
    pending_sales: 0,
    pending_voids: 0,
    pending_shifts: 0,
    pending_scans: 0,
    shift: null,
    printer: "none",
    now: new Date().toISOString(),
  };

  it("says how many sales need a supervisor", async () => {
    await act(async () => render(<StatusBar status={{ ...status, needs_supervisor: 3 }} error={null} />, h.root));
    expect(byId("needs-supervisor")?.textContent).toBe("3 sales need a supervisor");
    await act(async () => render(<StatusBar status={{ ...status, needs_supervisor: 1 }} error={null} />, h.root));
    expect(byId("needs-supervisor")?.textContent).toBe("1 sale needs a supervisor");
    await act(async () => render(<StatusBar status={{ ...status, needs_supervisor: 0 }} error={null} />, h.root));
    expect(byId("needs-supervisor")).toBeNull();
  });

  it("shows it in the app from the engine's status", async () => {
    const fake = new FakeBackend();
    fake.needsSupervisor = 2;
    await mount(fake);
    expect((await find("needs-supervisor")).textContent).toBe("2 sales need a supervisor");
  });

  it("a machine not set up says so instead of Starting…", async () => {
    await mount(new FakeBackend({ enrolled: false }));
    await find("setup-form");
    expect(byId("engine-state")?.textContent).toBe("Not set up");
    expect(byId("app")?.dataset.ready).toBe("true");
  });
});
