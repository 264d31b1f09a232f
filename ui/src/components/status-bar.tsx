import type { Status } from "../api";
import { formatAge, formatTime } from "../format";

/** Always on screen: is the server reachable, what still waits to upload,
 * how fresh the figures are. A cashier must see at a glance that sales are
 * safe on this machine even while the line is down. */
export function needsSupervisorText(n: number): string {
  return n === 1 ? "1 sale needs a supervisor" : `${n} sales need a supervisor`;
}

export function StatusBar({
  status,
  error,
  stale = false,
  enrolled = null,
}: {
  status: Status | null;
  error: string | null;
  stale?: boolean;
  /** False on a machine not set up yet: there is no engine status to wait for. */
  enrolled?: boolean | null;
}) {
  if (!status) {
    return (
      <div class="status-bar" data-testid="status-bar">
        <span class="status-pill unknown" data-testid="engine-state">
          {error ? "Engine not reachable" : enrolled === false ? "Not set up" : "Starting…"}
        </span>
        {error ? <span class="status-error">{error}</span> : null}
      </div>
    );
  }
  if (stale) {
    return (
      <div class="status-bar" data-testid="status-bar">
        <span class="status-pill offline" data-testid="net-status" data-online="unknown">
          Not answering
        </span>
        <span class="status-error" data-testid="engine-stale">
          The counter engine has not answered for a few seconds. Sales already completed are safe; wait, or restart the app.
        </span>
      </div>
    );
  }
  const waiting = status.pending_sales;
  const otherWaiting = status.pending_voids + status.pending_shifts + status.pending_scans;
  return (
    <div class="status-bar" data-testid="status-bar">
      <span
        class={`status-pill ${status.online ? "online" : "offline"}`}
        data-testid="net-status"
        data-online={String(status.online)}
        title={status.last_sync_error ?? undefined}
      >
        {status.online ? "Online" : "Offline"}
      </span>
      <span class={`status-item ${waiting > 0 ? "warn" : ""}`}>
        Waiting to upload: <strong data-testid="pending-sales">{waiting}</strong>{" "}
        {waiting === 1 ? "sale" : "sales"}
        {otherWaiting > 0 ? <span class="muted"> (+{otherWaiting} other)</span> : null}
      </span>
      <span class="status-item" title={status.last_sync_at ?? undefined}>
        Last sync: <strong data-testid="last-sync">{formatAge(status.last_sync_at, status.now)}</strong>
        {status.last_sync_at ? <span class="muted"> ({formatTime(status.last_sync_at)})</span> : null}
      </span>
      {status.online && status.live !== undefined ? (
        <span
          class={`status-item ${status.live ? "" : "warn"}`}
          data-testid="push-state"
          data-live={String(status.live)}
          title={
            status.live
              ? "The server tells this machine of every change at once."
              : "The server's push channel is not connected: this machine asks for changes instead."
          }
        >
          {status.live ? "Live updates" : `Polling every ${status.poll_every_s ?? 2} s`}
        </span>
      ) : null}
      {(status.needs_supervisor ?? 0) > 0 ? (
        <span class="status-item warn" data-testid="needs-supervisor" data-count={status.needs_supervisor}>
          <strong>{needsSupervisorText(status.needs_supervisor ?? 0)}</strong>
        </span>
      ) : null}
      {!status.online && status.last_sync_error ? (
        <span class="status-item muted" data-testid="sync-error">
          {status.last_sync_error}
        </span>
      ) : null}
      <span class="status-spacer" />
      <span class="status-item muted">
        {status.museum} · {status.device_name}
        {status.shift ? ` · shift: ${status.shift.cashier}` : ""}
      </span>
    </div>
  );
}
