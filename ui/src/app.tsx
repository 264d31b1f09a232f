// The app shell: status bar, the four screens and how to move between them
// (tabs, or F1–F4 from anywhere).
import { useCallback, useEffect, useState } from "preact/hooks";
import { EngineError, type Status } from "./api";
import { useBackend } from "./backend-context";
import { ErrorBox } from "./components/common";
import { StatusBar } from "./components/status-bar";
import { knowsMuseumTime, offsetFromSlot, setMuseumTimeZone, setMuseumUtcOffset } from "./format";
import { useEngineRefresh, usePoll, useKeys } from "./hooks";
import { CashierScreen, type CashierSession } from "./screens/cashier";
import { GateScreen } from "./screens/gate";
import { SetupScreen } from "./screens/setup";
import { SupervisorScreen } from "./screens/supervisor";

export type ScreenName = "sell" | "gate" | "supervisor" | "setup";

const TABS: { name: ScreenName; label: string; key: string }[] = [
  { name: "sell", label: "Sell", key: "F1" },
  { name: "gate", label: "Gate", key: "F2" },
  { name: "supervisor", label: "Supervisor", key: "F3" },
  { name: "setup", label: "Setup", key: "F4" },
];

const MODE_KEY = "tessera.mode";
const STALE_AFTER_MS = 5000;

/** The screen this device opens on: what setup chose, else its role. */
function startScreen(status: Status): ScreenName {
  const saved = localStorage.getItem(MODE_KEY);
  if (saved === "gate" || saved === "sell") return saved;
  return status.role === "gate" ? "gate" : status.role === "supervisor" ? "supervisor" : "sell";
}

export function App() {
  const backend = useBackend();
  const [enrolled, setEnrolled] = useState<boolean | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [statusError, setStatusError] = useState<string | null>(null);
  const [screen, setScreen] = useState<ScreenName | null>(null);
  const [session, setSession] = useState<CashierSession | null>(null);
  // When the engine last answered, on the webview's clock: a status call
  // that never returns must not leave a reassuring "Online" on screen.
  const [lastAnswer, setLastAnswer] = useState(() => Date.now());
  const [tick, setTick] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setTick(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);

  useEffect(() => {
    backend.isEnrolled().then(
      (yes) => {
        setEnrolled(yes);
        if (!yes) setScreen("setup");
      },
      (e) => setStatusError(EngineError.from(e).message),
    );
  }, [backend]);

  const refreshStatus = useCallback(async () => {
    if (!enrolled) return;
    try {
      const s = await backend.status();
      setMuseumTimeZone(s.time_zone);
      if (!knowsMuseumTime()) {
        const slot = (await backend.slotsToday().catch(() => []))[0];
        if (slot) setMuseumUtcOffset(offsetFromSlot(slot));
      }
      setStatus(s);
      setStatusError(null);
      setLastAnswer(Date.now());
      setScreen((cur) => cur ?? startScreen(s));
    } catch (e) {
      setStatusError(EngineError.from(e).message);
    }
  }, [backend, enrolled]);

  // The bar follows the engine's changes as they happen (a sale, an upload,
  // the server's push connecting or lost). The slow poll is only the
  // watchdog: an engine that stops answering must turn the bar stale.
  useEngineRefresh(["status"], refreshStatus, [refreshStatus]);
  usePoll(refreshStatus, STALE_AFTER_MS / 2, [refreshStatus]);

  useKeys((e) => {
    const tab = TABS.find((t) => t.key === e.key);
    if (tab && enrolled) {
      e.preventDefault();
      setScreen(tab.name);
    }
  });

  const onEnrolled = (s: Status, mode: "sell" | "gate") => {
    localStorage.setItem(MODE_KEY, mode);
    setEnrolled(true);
    setStatus(s);
    setScreen(mode);
  };

  const current = screen ?? (enrolled === false ? "setup" : null);
  // For tests and for anyone watching the start: the shell knows whether it
  // is set up and, if so, has the engine's status.
  const ready = enrolled === false || (enrolled === true && status !== null);
  return (
    <div class="app" data-screen={current ?? "loading"} data-ready={ready ? "true" : "false"} data-testid="app">
      <header class="top">
        <StatusBar
          status={status}
          error={statusError}
          enrolled={enrolled}
          stale={!!enrolled && status !== null && tick - lastAnswer > STALE_AFTER_MS}
        />
        {enrolled ? (
          <nav class="tabs" aria-label="Screens">
            {TABS.map((t) => (
              <button
                type="button"
                class={`tab ${current === t.name ? "active" : ""}`}
                aria-current={current === t.name ? "page" : undefined}
                data-testid={`nav-${t.name}`}
                onClick={() => setScreen(t.name)}
              >
                {t.label} <kbd>{t.key}</kbd>
              </button>
            ))}
          </nav>
        ) : null}
      </header>
      <main class="content">
        {current === "setup" ? (
          <SetupScreen enrolled={!!enrolled} status={status} onEnrolled={onEnrolled} onChanged={refreshStatus} />
        ) : current === "sell" ? (
          <CashierScreen status={status} onChanged={refreshStatus} session={session} onSession={setSession} />
        ) : current === "gate" ? (
          <GateScreen status={status} />
        ) : current === "supervisor" ? (
          <SupervisorScreen status={status} />
        ) : statusError && !status ? (
          // E.g. a damaged database: the engine's words say which file and why.
          <div class="panel narrow" data-testid="start-failed">
            <h1>This machine cannot start selling</h1>
            <ErrorBox message={statusError} />
          </div>
        ) : (
          <p class="muted">Starting…</p>
        )}
      </main>
    </div>
  );
}
