// The gate: a scanner types a code and Enter into a field that never loses
// focus; the answer fills the screen in green or red so the attendant reads
// it from a step away. Offline the engine decides on this device (signature
// and slot) and says so; double entries are then caught when it syncs.
import { useLayoutEffect, useRef, useState } from "preact/hooks";
import type { ScanView, Status } from "../api";
import { useBackend } from "../backend-context";
import { ErrorBox } from "../components/common";
import { formatTime } from "../format";
import { isTyping, useAction, useKeys } from "../hooks";

interface ScanShown {
  view: ScanView;
  /** When the scan was decided, on the engine's clock. */
  at: string;
  seq: number;
}

/** What the big panel says, in words for a visitor standing there. */
export function verdict(view: ScanView): { title: string; detail: string } {
  if (view.result === "admitted") {
    const what = view.product_name ?? view.product_id ?? "Ticket";
    const n = view.admits ?? 1;
    return { title: "ADMIT", detail: `${what} · admits ${n}` };
  }
  return { title: "DENY", detail: view.message || "This ticket cannot be used." };
}

/** What the attendant must know while the server is away: whether other
 * gates still tell this one what they admit. */
export function offlineText(status: Status): string {
  const peers = status.gate_peers ?? [];
  const up = peers.filter((p) => p.reachable === true).length;
  if (peers.length === 0)
    return "OFFLINE: tickets are checked on this machine. A ticket used at another gate meanwhile is caught when the network returns.";
  if (up === peers.length)
    return `OFFLINE: tickets are checked on this machine, and the ${peers.length} other gate${peers.length === 1 ? "" : "s"} share what they admit: a ticket used there is refused here.`;
  return `OFFLINE: tickets are checked on this machine. ${up} of ${peers.length} other gates answer; a ticket used at the others is caught when they or the network return.`;
}

export function GateScreen({ status }: { status: Status | null }) {
  const backend = useBackend();
  const input = useRef<HTMLInputElement>(null);
  const [code, setCode] = useState("");
  const [shown, setShown] = useState<ScanShown | null>(null);
  // The engine counts this device's admissions; until the first scan of
  // this session the screen does not know it, and says so.
  const [admitted, setAdmitted] = useState<number | null>(null);
  const { busy, error, run } = useAction();
  const seq = useRef(0);

  const refocus = () => {
    setTimeout(() => input.current?.focus(), 0);
  };
  // Focus as the field appears (not a tick later, when a scanner may
  // already be typing), then after every scan.
  useLayoutEffect(() => input.current?.focus(), []);

  // Any key pressed elsewhere belongs to the scanner.
  useKeys((e) => {
    if (!isTyping(e.target) && e.key.length === 1 && !e.ctrlKey && !e.altKey) input.current?.focus();
  });

  const submit = async (e: Event) => {
    e.preventDefault();
    // The field's own value, not the state: a scanner types the code and
    // Enter faster than the screen re-renders.
    const scanned = (input.current?.value ?? code).trim();
    setCode("");
    if (input.current) input.current.value = "";
    if (!scanned) return;
    const view = await run(() => backend.scan(scanned));
    if (view) {
      const at = (view.result === "admitted" ? view.first_used_at : null) ?? status?.now ?? new Date().toISOString();
      setShown({ view, at, seq: ++seq.current });
      setAdmitted(view.admitted_today);
    }
    refocus();
  };

  const v = shown ? verdict(shown.view) : null;
  return (
    <div class="gate" data-testid="gate-screen">
      {status && !status.online ? (
        <div class="offline-banner" data-testid="gate-offline" role="status">
          {offlineText(status)}
        </div>
      ) : null}
      <form class="scan-form" onSubmit={submit}>
        <label class="field">
          <span class="field-label">Scan a ticket (or type its code and press Enter)</span>
          <input
            ref={input}
            class="scan-input"
            data-testid="scan-input"
            value={code}
            autocomplete="off"
            spellcheck={false}
            onInput={(e) => setCode(e.currentTarget.value)}
            onBlur={(e) => {
              // Keep the scanner's keystrokes here unless the attendant
              // deliberately moved to another control.
              if (!e.relatedTarget) refocus();
            }}
          />
        </label>
      </form>
      <ErrorBox message={error} />
      {busy ? (
        // Never leave the previous visitor's ADMIT up while this one is checked.
        <div class="verdict idle" data-testid="scan-checking">
          Checking…
        </div>
      ) : shown && v ? (
        <div
          class={`verdict ${shown.view.result === "admitted" ? "admit" : "deny"}`}
          data-testid="scan-result"
          data-result={shown.view.result}
          data-reason={shown.view.reason ?? ""}
          data-seq={shown.seq}
          role="status"
          aria-live="assertive"
        >
          <div class="verdict-title" data-testid="scan-verdict">
            {v.title}
          </div>
          <div class="verdict-detail" data-testid="scan-detail">
            {v.detail}
          </div>
          {shown.view.result === "denied" && shown.view.first_used_at ? (
            <div class="verdict-extra" data-testid="scan-first-use">
              First used at {formatTime(shown.view.first_used_at)}
              {shown.view.first_used_by ? ` (${shown.view.first_used_by})` : ""}
            </div>
          ) : null}
          {shown.view.offline ? <div class="verdict-extra">Decided on this machine, without the server</div> : null}
          <div class="verdict-time">{formatTime(shown.at)}</div>
        </div>
      ) : (
        <div class="verdict idle">Ready to scan</div>
      )}
      <div class="gate-count">
        Admitted today: <strong data-testid="admitted-today">{admitted ?? "—"}</strong>
      </div>
    </div>
  );
}
