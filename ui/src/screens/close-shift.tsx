// Closing the shift: an interim X report any time, then the counted cash →
// the Z report (the engine also prints it). Expected cash, counted cash and
// the difference are the three numbers a supervisor checks first.
import { useState } from "preact/hooks";
import type { ShiftReport } from "../api";
import { useBackend } from "../backend-context";
import { ErrorBox, Field, Money } from "../components/common";
import { formatTime } from "../format";
import { useAction, useFirstFocus } from "../hooks";
import { formatMoney, formatSigned, parseMoney } from "../money";

export function CloseShift({ onClosed }: { onClosed: (r: ShiftReport) => void }) {
  const backend = useBackend();
  const [countedText, setCountedText] = useState("");
  const [xReport, setXReport] = useState<ShiftReport | null>(null);
  const { busy, error, setError, run } = useAction();
  const first = useFirstFocus<HTMLInputElement>();
  const counted = parseMoney(countedText);

  const close = async (e: Event) => {
    e.preventDefault();
    if (counted === null) return setError("Count the cash in the drawer and type the amount.");
    const report = await run(() => backend.closeShift(counted));
    if (report) onClosed(report);
  };

  return (
    <div class="panel close-shift" data-testid="close-shift">
      <h1>Close the shift</h1>
      <div class="row">
        <button type="button" class="big" data-testid="x-report" disabled={busy} onClick={async () => setXReport((await run(() => backend.xReport())) ?? null)}>
          Show X report (interim)
        </button>
      </div>
      {xReport ? <ReportTable report={xReport} /> : null}
      <form onSubmit={close}>
        <Field label="Cash counted in the drawer (float included)">
          <input
            inputMode="decimal"
            class="money-input"
            data-testid="counted-cash"
            autocomplete="off"
            ref={first}
            value={countedText}
            onInput={(e) => setCountedText(e.currentTarget.value)}
          />
        </Field>
        <ErrorBox message={error} />
        <button type="submit" class="primary big" data-testid="close-shift-submit" disabled={busy}>
          Close shift and print Z report
        </button>
      </form>
    </div>
  );
}

export function ZReportView({ report, onDone }: { report: ShiftReport; onDone: () => void }) {
  const done = useFirstFocus<HTMLButtonElement>();
  return (
    <div class="panel" data-testid="z-report">
      <h1>Z report: shift closed</h1>
      <ReportTable report={report} />
      <button type="button" class="primary big" data-testid="z-done" ref={done} onClick={onDone}>
        Done
      </button>
    </div>
  );
}

function overShortText(cents: number, currency: string): string {
  if (cents === 0) return "balanced";
  return cents > 0 ? `${formatSigned(cents, currency)} over` : `${formatMoney(-cents, currency)} short`;
}

export function ReportTable({ report }: { report: ShiftReport }) {
  const c = report.currency;
  return (
    <div class="report" data-testid={`${report.kind}-report-table`}>
      <dl class="facts">
        <dt>Counter</dt>
        <dd>{report.counter}</dd>
        <dt>Cashier</dt>
        <dd>{report.cashier}</dd>
        <dt>Opened</dt>
        <dd>{formatTime(report.opened_at)}</dd>
        {report.closed_at ? (
          <>
            <dt>Closed</dt>
            <dd>{formatTime(report.closed_at)}</dd>
          </>
        ) : null}
        <dt>Sales</dt>
        <dd>
          {report.sales_count} ({report.voids_count} voided), receipts {report.first_seq ?? "—"}–{report.last_seq ?? "—"}, {report.admissions} places
        </dd>
        <dt>Takings</dt>
        <dd>
          <Money cents={report.gross} currency={c} testid="report-gross" />
        </dd>
      </dl>
      <table class="table">
        <thead>
          <tr>
            <th>Payment</th>
            <th class="num">Sales</th>
            <th class="num">Refunds</th>
            <th class="num">Net</th>
          </tr>
        </thead>
        <tbody>
          {report.by_method.map((m) => (
            <tr>
              <td>{m.method}</td>
              <td class="num">{formatMoney(m.sales, c)}</td>
              <td class="num">{formatMoney(m.refunds, c)}</td>
              <td class="num">{formatMoney(m.net, c)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {report.by_product.length > 0 ? (
        <table class="table">
          <thead>
            <tr>
              <th>Product</th>
              <th class="num">Qty</th>
              <th class="num">Gross</th>
            </tr>
          </thead>
          <tbody>
            {report.by_product.map((p) => (
              <tr>
                <td>{p.name}</td>
                <td class="num">{p.quantity}</td>
                <td class="num">{formatMoney(p.gross, c)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {report.vat.length > 0 ? (
        <table class="table">
          <thead>
            <tr>
              <th>VAT</th>
              <th class="num">Net</th>
              <th class="num">Tax</th>
              <th class="num">Gross</th>
            </tr>
          </thead>
          <tbody>
            {report.vat.map((v) => (
              <tr>
                <td>{v.label}</td>
                <td class="num">{formatMoney(v.amounts.net, c)}</td>
                <td class="num">{formatMoney(v.amounts.tax, c)}</td>
                <td class="num">{formatMoney(v.amounts.gross, c)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <dl class="facts cash-check">
        <dt>Opening float</dt>
        <dd>{formatMoney(report.float, c)}</dd>
        <dt>Expected cash</dt>
        <dd>
          <Money cents={report.expected_cash} currency={c} testid="z-expected" />
        </dd>
        {report.counted_cash !== null ? (
          <>
            <dt>Counted cash</dt>
            <dd>
              <Money cents={report.counted_cash} currency={c} testid="z-counted" />
            </dd>
          </>
        ) : null}
        {report.over_short !== null ? (
          <>
            <dt>Over / short</dt>
            <dd class={report.over_short === 0 ? "ok" : "warn"} data-testid="z-over-short" data-cents={report.over_short}>
              {overShortText(report.over_short, c)}
            </dd>
          </>
        ) : null}
      </dl>
    </div>
  );
}
