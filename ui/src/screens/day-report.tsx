// The server's day reconciliation laid out for a supervisor: channels side by
// side with a total, the cash drawers, then every difference by name
// (missing uploads, leases still held, sales over capacity, double entries).
// Shapes are the generated wire types (tessera_core::api::report); anything
// else falls back to the generic view so a newer server never leaves the
// screen blank.
import type { ComponentChildren } from "preact";
import { formatTime } from "../format";
import { formatMoney } from "../money";
import type { ChannelReport, DayReport, LeaseInfo } from "../api";
import { ReportValue } from "./report-view";

export type { DayReport };

export function isDayReport(v: unknown): v is DayReport {
  const r = v as Partial<DayReport> | null;
  return (
    !!r &&
    typeof r === "object" &&
    Array.isArray(r.channels) &&
    !!r.total &&
    Array.isArray(r.shifts) &&
    !!r.missing &&
    Array.isArray(r.missing.counters) &&
    Array.isArray(r.missing.leases_held) &&
    Array.isArray(r.slots) &&
    Array.isArray(r.conflicts)
  );
}

function Section({ title, count, children, testid }: { title: string; count?: number; children: ComponentChildren; testid?: string }) {
  return (
    <section data-testid={testid}>
      <h3>
        {title}
        {count !== undefined ? <span class={count > 0 ? "tag warn" : "tag"}>{count}</span> : null}
      </h3>
      {children}
    </section>
  );
}

const None = () => <p class="muted">none</p>;

export function DayReportView({ report, onRevoke }: { report: unknown; onRevoke: (leaseId: string) => void }) {
  if (!isDayReport(report)) return <ReportValue value={report} onRevoke={onRevoke} />;
  const c = report.currency;
  const m = (v: number | null | undefined) => (v === null || v === undefined ? "—" : formatMoney(v, c));
  const methods = [...new Set(report.total.payments.map((p) => p.method))];
  const byMethod = (ch: ChannelReport, method: string) => ch.payments.find((p) => p.method === method)?.net ?? 0;
  const channelRow = (ch: ChannelReport, total = false) => (
    <tr class={total ? "total" : ""}>
      <td>{total ? "Total" : ch.channel}</td>
      <td class="num">{ch.sales_count}</td>
      <td class="num">{ch.voids_count}</td>
      <td class="num">{ch.admissions}</td>
      <td class="num">{m(ch.gross_sales)}</td>
      <td class="num">{m(ch.refunds)}</td>
      {methods.map((method) => (
        <td class="num">{m(byMethod(ch, method))}</td>
      ))}
      <td class="num">{m(ch.net_takings)}</td>
    </tr>
  );
  const busySlots = report.slots.filter((s) => s.sold_online + s.sold_counter + s.admitted + s.over_capacity > 0);
  const quarantine = report.quarantine ?? [];
  return (
    <div class="day-report-view">
      <p class="muted">
        {report.museum} · {report.date} · generated {formatTime(report.generated_at)}
      </p>
      {report.does_not_add_up ? (
        <p class="error" role="alert" data-testid="report-does-not-add-up">
          This report does not add up: {report.does_not_add_up}. Do not close the day on these figures.
        </p>
      ) : null}
      <Section title="Takings by channel" testid="report-channels">
        <table class="table">
          <thead>
            <tr>
              <th>Channel</th>
              <th class="num">Sales</th>
              <th class="num">Voids</th>
              <th class="num">Admissions</th>
              <th class="num">Gross</th>
              <th class="num">Refunds</th>
              {methods.map((method) => (
                <th class="num">{method}</th>
              ))}
              <th class="num">Net</th>
            </tr>
          </thead>
          <tbody>
            {report.channels.map((ch) => channelRow(ch))}
            {channelRow(report.total, true)}
          </tbody>
        </table>
      </Section>
      <Section title="VAT">
        {report.total.vat.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th>Rate</th>
                <th class="num">Net</th>
                <th class="num">Tax</th>
                <th class="num">Gross</th>
              </tr>
            </thead>
            <tbody>
              {report.total.vat.map((v) => (
                <tr>
                  <td>{v.label}</td>
                  <td class="num">{m(v.net)}</td>
                  <td class="num">{m(v.tax)}</td>
                  <td class="num">{m(v.gross)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Cash drawers" testid="report-shifts">
        {report.shifts.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th>Counter</th>
                <th>Cashier</th>
                <th>Open</th>
                <th class="num">Float</th>
                <th class="num">Expected</th>
                <th class="num">Counted</th>
                <th class="num">Over / short</th>
                <th>Z report</th>
              </tr>
            </thead>
            <tbody>
              {report.shifts.map((s) => (
                <tr>
                  <td>{s.counter}</td>
                  <td>{s.cashier}</td>
                  <td>
                    {formatTime(s.opened_at, false)}–{s.closed_at ? formatTime(s.closed_at, false) : "open"}
                  </td>
                  <td class="num">{m(s.float)}</td>
                  <td class="num">{m(s.expected_cash)}</td>
                  <td class="num">{m(s.counted_cash)}</td>
                  <td class={`num ${s.over_short ? "warn" : ""}`}>{m(s.over_short)}</td>
                  <td>{s.z_received ? "received" : "missing"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Uploads missing" count={report.missing.counters.length} testid="report-missing">
        {report.missing.counters.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th>Counter</th>
                <th>Problem</th>
                <th class="num">Received up to</th>
                <th class="num">Counter reports</th>
                <th>Last sync</th>
              </tr>
            </thead>
            <tbody>
              {report.missing.counters.map((u) => (
                <tr>
                  <td>{u.counter}</td>
                  <td>{u.problem}</td>
                  <td class="num">#{u.acked_seq}</td>
                  <td class="num">#{u.reported_seq}</td>
                  <td>{formatTime(u.last_sync_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Leases still held" count={report.missing.leases_held.length} testid="report-leases">
        {report.missing.leases_held.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th>Counter</th>
                <th>Slot</th>
                <th class="num">Held</th>
                <th class="num">Sold</th>
                <th class="num">Unsold</th>
                <th>Last sync</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {report.missing.leases_held.map((l) => (
                <tr>
                  <td>{l.counter}</td>
                  <td>{l.slot_id}</td>
                  <td class="num">{l.escrow}</td>
                  <td class="num">{l.sold}</td>
                  <td class="num">{l.unsold}</td>
                  <td>{formatTime(l.last_sync_at)}</td>
                  <td>
                    <button type="button" class="small danger" data-testid="revoke-row" onClick={() => onRevoke(l.lease_id)}>
                      Revoke
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Sold over capacity" count={report.missing.over_capacity.length}>
        {report.missing.over_capacity.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <tbody>
              {report.missing.over_capacity.map((o) => (
                <tr>
                  <td>{o.counter}</td>
                  <td>sale #{o.terminal_seq}</td>
                  <td>{o.slot_id}</td>
                  <td class="num">{o.admissions_over} over</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Uploads that need a supervisor" count={quarantine.length} testid="report-quarantine">
        {quarantine.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th>Counter</th>
                <th>What</th>
                <th>Slot</th>
                <th>Why the server held it</th>
                <th>Received</th>
              </tr>
            </thead>
            <tbody>
              {quarantine.map((q) => (
                <tr>
                  <td>{q.counter}</td>
                  <td>
                    {q.kind}
                    {q.terminal_seq !== null ? ` #${q.terminal_seq}` : ""}
                  </td>
                  <td>{q.slot_id ?? ""}</td>
                  <td>{q.reason}</td>
                  <td>{formatTime(q.received_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Double entries at the gates" count={report.conflicts.length} testid="report-conflicts">
        {report.conflicts.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th>Ticket</th>
                <th>Slot</th>
                <th>First</th>
                <th>Second</th>
              </tr>
            </thead>
            <tbody>
              {report.conflicts.map((x) => (
                <tr>
                  <td>
                    <code>{x.ticket_id}</code>
                  </td>
                  <td>{x.slot_id}</td>
                  <td>
                    {x.first_gate} {formatTime(x.first_at)}
                  </td>
                  <td>
                    {x.second_gate} {formatTime(x.second_at)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Slots with activity">
        {busySlots.length === 0 ? (
          <None />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th>Slot</th>
                <th class="num">Capacity</th>
                <th class="num">Online</th>
                <th class="num">Counters</th>
                <th class="num">Admitted</th>
                <th class="num">No-shows</th>
                <th class="num">Over</th>
              </tr>
            </thead>
            <tbody>
              {busySlots.map((s) => (
                <tr>
                  <td>{s.slot_id}</td>
                  <td class="num">{s.capacity}</td>
                  <td class="num">{s.sold_online}</td>
                  <td class="num">{s.sold_counter}</td>
                  <td class="num">{s.admitted}</td>
                  <td class="num">{s.no_shows}</td>
                  <td class="num">{s.over_capacity}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
    </div>
  );
}

function isLeaseList(v: unknown): v is LeaseInfo[] {
  return Array.isArray(v) && v.every((x) => x && typeof x === "object" && "lease_id" in x && "device" in x);
}

/** The counters' leases of a day (`GET /v1/leases`), to pick one to revoke. */
export function LeasesView({ leases, onRevoke }: { leases: unknown; onRevoke: (leaseId: string) => void }) {
  if (!isLeaseList(leases)) return <ReportValue value={leases} onRevoke={onRevoke} name="leases" />;
  if (leases.length === 0) return <None />;
  return (
    <table class="table">
      <thead>
        <tr>
          <th>Counter</th>
          <th>Slot</th>
          <th class="num">Held</th>
          <th class="num">Sold</th>
          <th>Last sync</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {leases.map((l) => (
          <tr class={l.revoked ? "voided" : ""}>
            <td>{l.device}</td>
            <td>{l.slot_id}</td>
            <td class="num">{l.escrow}</td>
            <td class="num">{l.sold}</td>
            <td>{typeof l.last_sync_at === "number" ? formatTime(new Date(l.last_sync_at).toISOString()) : "never"}</td>
            <td>
              {l.revoked ? (
                <span class="tag">revoked</span>
              ) : (
                <button type="button" class="small danger" data-testid="revoke-row" onClick={() => onRevoke(l.lease_id)}>
                  Revoke
                </button>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
