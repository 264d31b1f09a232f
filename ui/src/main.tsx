import { render } from "preact";
import { tauriBackend, type Backend } from "./api";
import { App } from "./app";
import { BackendContext } from "./backend-context";
import "./style.css";

// Inside the Tauri app the commands are there; in a plain browser
// (`npm run dev`) the fake engine stands in so the screens can be worked on.
async function pickBackend(): Promise<Backend> {
  if ("__TAURI_INTERNALS__" in window) {
    const { invoke } = await import("@tauri-apps/api/core");
    const { listen } = await import("@tauri-apps/api/event");
    return tauriBackend(invoke, listen);
  }
  const { FakeBackend } = await import("./fake-backend");
  const params = new URLSearchParams(location.search);
  return new FakeBackend({ enrolled: params.has("enrolled"), latencyMs: 120 });
}

void pickBackend().then((backend) => {
  const root = document.getElementById("app");
  if (!root) return;
  render(
    <BackendContext.Provider value={backend}>
      <App />
    </BackendContext.Provider>,
    root,
  );
});
