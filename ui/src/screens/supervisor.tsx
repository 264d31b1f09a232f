// The supervisor: the day's reconciliation from the server (online against
// each counter, by product and payment, VAT, cash over/short, missing uploads,
// leases, gate conflicts), exported as the server's CSV; and revoking the
// lease of a counter that will not come back, so its places sell again.
import { useState } from "preact/hooks";
import type { Status } from "../api";
import { useBackend } from "../backend-context";
import { ErrorBox, Field, Notice } from "../components/common";
import { todayIso } from "../format";
import { useAction, useFirstFocus } from "../hooks";
import { DayReportView, LeasesView } from "./day-report";

export function SupervisorScreen({ status }: { status: Status | null }) {
  const backend = useBackend();
  const [pin, setPin] = useState("");
  const [date, setDate] = useState(() => todayIso(status?.now ?? new Date()));
  const [report, setReport] = useState<unknown>(null);
  const [leases, setLeases] = useState<unknown>(null);
  const [leaseId, setLeaseId] = useState("");
  const [notice, setNotice] = useState<string | null>(null);
  const { busy, error, setError, run } = useAction();
  const first = useFirstFocus<HTMLInputElement>();

  const needPin = () => {
    if (pin) return false;
    setError("Type your supervisor PIN.");
    return true;
  };

  const load = async (e?: Event) => {
    e?.preventDefault();
    setNotice(null);
    if (needPin()) return;
    const r = await run(() => backend.dayReport(pin, date));
    if (r !== undefined) setReport(r);
  };

  const exportCsv = async () => {
    setNotice(null);
    if (needPin()) return;
    const path = await run(async () => backend.saveExport(`day-report-${date}.csv`, await backend.dayReportCsv(pin, date)));
    if (path) setNotice(`Day report saved to ${path}`);
  };

  const loadLeases = async () => {
    setNotice(null);
    if (needPin()) return;
    const l = await run(() => backend.leases(pin, date));
    if (l !== undefined) setLeases(l);
  };

  const revoke = async (id: string) => {
    setNotice(null);
    if (!id.trim()) return setError("Type or pick the lease to revoke.");
    if (needPin()) return;
    if (!window.confirm(`Revoke lease ${id}? Its unsold places go back on sale; a sale from it that still arrives is flagged.`)) return;
    const done = await run(() => backend.revokeLease(pin, id.trim()));
    if (done !== undefined) {
      setNotice(`Lease ${id} revoked.`);
      setLeaseId("");
      const l = await run(() => backend.leases(pin, date));
      if (l !== undefined) setLeases(l);
    }
  };

  return (
    <div class="panel supervisor" data-testid="supervisor-screen">
      <h1>Day report</h1>
      {status && !status.online ? <Notice>The server cannot be reached: the day report and leases need it.</Notice> : null}
      <form class="row wrap" onSubmit={load}>
        <Field label="Supervisor PIN">
          <input type="password" inputMode="numeric" autocomplete="off" data-testid="sup-pin" ref={first} value={pin} onInput={(e) => setPin(e.currentTarget.value)} />
        </Field>
        <Field label="Day">
          <input type="date" data-testid="sup-date" value={date} onInput={(e) => setDate(e.currentTarget.value)} />
        </Field>
        <button type="submit" class="primary big" data-testid="load-report" disabled={busy}>
          Show report
        </button>
        <button type="button" class="big" data-testid="export-csv" disabled={busy} onClick={exportCsv}>
          Export CSV
        </button>
        <button type="button" class="big" data-testid="load-leases" disabled={busy} onClick={loadLeases}>
          Leases
        </button>
      </form>
      <ErrorBox message={error} />
      {notice ? <Notice testid="sup-notice">{notice}</Notice> : null}
      {report !== null ? (
        <div class="day-report" data-testid="day-report">
          <DayReportView report={report} onRevoke={(id) => revoke(id)} />
        </div>
      ) : null}
      <h2>Revoke a lease</h2>
      <p class="muted">
        Only for a counter that will not come back (broken, stolen): its unsold places return to sale now instead of when the slot ends.
      </p>
      {leases !== null ? (
        <div data-testid="leases">
          <LeasesView leases={leases} onRevoke={(id) => revoke(id)} />
        </div>
      ) : null}
      <div class="row">
        <input class="grow" placeholder="lease id" data-testid="revoke-lease-id" value={leaseId} onInput={(e) => setLeaseId(e.currentTarget.value)} />
        <button type="button" class="danger big" data-testid="revoke-lease" disabled={busy} onClick={() => revoke(leaseId)}>
          Revoke
        </button>
      </div>
    </div>
  );
}
