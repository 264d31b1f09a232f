// What the screen tests share: a fresh root per test, the app mounted over a
// fake engine, and helpers that find, wait for, type into and submit fields
// by their data-testid, as a keyboard or a scanner would.
import { render } from "preact";
import { act } from "preact/test-utils";
import { afterEach, beforeEach } from "vitest";
import { App } from "./app";
import { BackendContext } from "./backend-context";
import type { FakeBackend } from "./fake-backend";

export function appHarness() {
  const h = { root: document.createElement("div") };

  beforeEach(() => {
    localStorage.clear();
    h.root = document.createElement("div");
    document.body.appendChild(h.root);
  });

  afterEach(() => {
    render(null, h.root);
    h.root.remove();
  });

  const byId = (id: string) => h.root.querySelector<HTMLElement>(`[data-testid="${id}"]`);

  async function settle() {
    await act(() => new Promise((r) => setTimeout(r, 20)));
  }

  async function mount(backend: FakeBackend) {
    await act(async () => {
      render(
        <BackendContext.Provider value={backend}>
          <App />
        </BackendContext.Provider>,
        h.root,
      );
    });
  }

  async function find(id: string, timeoutMs = 2000): Promise<HTMLElement> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const el = byId(id);
      if (el) return el;
      if (Date.now() > end) throw new Error(`no [data-testid="${id}"] in ${h.root.innerHTML.slice(0, 2000)}`);
      await settle();
    }
  }

  async function submit(id: string) {
    const el = await find(id);
    await act(async () => {
      el.closest("form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    });
  }

  return { h, byId, settle, mount, find, submit };
}
