// Today's sales at this counter: reprint a receipt, or void a sale with a
// supervisor's PIN and a reason (the engine checks both and refunds by the
// sale's own payment method).
import { useState } from "preact/hooks";
import type { SaleView } from "../api";
import { EngineError } from "../api";
import { useBackend } from "../backend-context";
import { ErrorBox, Field, Money, Notice } from "../components/common";
import { formatTime } from "../format";
import { useAction, useEngineRefresh, useFirstFocus } from "../hooks";
import { formatMoney } from "../money";
import { printOutcomeText } from "./setup";

export function SalesList({ onChanged }: { onChanged: () => void }) {
  const backend = useBackend();
  const [sales, setSales] = useState<SaleView[] | null>(null);
  const [voiding, setVoiding] = useState<SaleView | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const { busy, error, setError, run } = useAction();

  const load = async () => {
    try {
      setSales(await backend.salesToday());
    } catch (e) {
      setError(EngineError.from(e).message);
    }
  };
  // Upload ticks (waiting → sent) change while the list is open.
  useEngineRefresh(["sales"], load);

  const reprint = async (s: SaleView) => {
    setNotice(null);
    const outcome = await run(() => backend.reprint(s.sale_id));
    if (outcome) setNotice(`Sale #${s.terminal_seq}: ${printOutcomeText(outcome)}`);
  };

  return (
    <div class="panel" data-testid="sales-list">
      <h1>Sales today</h1>
      {notice ? <Notice testid="sales-notice">{notice}</Notice> : null}
      <ErrorBox message={error} />
      {voiding ? (
        <VoidForm
          sale={voiding}
          onCancel={() => setVoiding(null)}
          onDone={(text) => {
            setVoiding(null);
            setNotice(text);
            void load();
            onChanged();
          }}
        />
      ) : null}
      {sales === null ? (
        <p class="muted">Loading…</p>
      ) : sales.length === 0 ? (
        <p class="muted">No sales yet today.</p>
      ) : (
        <table class="table">
          <thead>
            <tr>
              <th>#</th>
              <th>Time</th>
              <th>Entry</th>
              <th>Tickets</th>
              <th class="num">Total</th>
              <th>Paid</th>
              <th>Upload</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {sales.map((s) => (
              <tr data-testid="sale-row" data-seq={s.terminal_seq} class={s.voided ? "voided" : ""}>
                <td>{s.terminal_seq}</td>
                <td>{formatTime(s.created_at)}</td>
                <td>{s.slot_label}</td>
                <td>{s.lines.map((l) => `${l.quantity} × ${l.name}`).join(", ")}</td>
                <td class="num">{formatMoney(s.total, s.currency)}</td>
                <td>{s.payment_method}</td>
                <td data-testid="sale-uploaded">{s.uploaded ? "sent" : "waiting"}</td>
                <td class="actions">
                  <button type="button" class="small" data-testid={`reprint-${s.terminal_seq}`} disabled={busy} onClick={() => reprint(s)}>
                    Reprint
                  </button>
                  {s.voided ? (
                    <span class="tag">voided</span>
                  ) : (
                    <button type="button" class="small danger" data-testid={`void-${s.terminal_seq}`} onClick={() => setVoiding(s)}>
                      Void…
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function VoidForm({ sale, onCancel, onDone }: { sale: SaleView; onCancel: () => void; onDone: (text: string) => void }) {
  const backend = useBackend();
  const [pin, setPin] = useState("");
  const [reason, setReason] = useState("");
  const { busy, error, setError, run } = useAction();
  const first = useFirstFocus<HTMLInputElement>();
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!reason.trim()) return setError("Say why the sale is voided.");
    const done = await run(() => backend.voidSale(sale.sale_id, pin, reason.trim()));
    if (done)
      onDone(
        `Sale #${sale.terminal_seq} voided (approved by ${done.approved_by}). Refund ${formatMoney(done.refund, sale.currency)} by ${done.refund_method}.`,
      );
  };
  return (
    <form class="void-form" onSubmit={submit} data-testid="void-form">
      <h2>
        Void sale #{sale.terminal_seq}: <Money cents={sale.total} currency={sale.currency} /> ({sale.payment_method})
      </h2>
      <Field label="Reason">
        <input data-testid="void-reason" ref={first} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
      </Field>
      <Field label="Supervisor PIN">
        <input type="password" inputMode="numeric" autocomplete="off" data-testid="void-pin" value={pin} onInput={(e) => setPin(e.currentTarget.value)} />
      </Field>
      <ErrorBox message={error} />
      <div class="row">
        <button type="submit" class="danger big" data-testid="void-confirm" disabled={busy || !pin}>
          Void and refund
        </button>
        <button type="button" class="big" onClick={onCancel}>
          Keep the sale
        </button>
      </div>
    </form>
  );
}
