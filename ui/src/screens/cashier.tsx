// The till: who is at it (PIN), the shift (opening float), then selling,
// today's sales and closing the shift. The engine checks every PIN; the
// screen only remembers who logged in until they lock the till.
import { useState } from "preact/hooks";
import type { ShiftReport, StaffView, Status } from "../api";
import { useBackend } from "../backend-context";
import { ErrorBox, Field, Money } from "../components/common";
import { formatTime } from "../format";
import { useAction, useFirstFocus } from "../hooks";
import { formatMoney, parseMoney } from "../money";
import { CloseShift, ZReportView } from "./close-shift";
import { SalesList } from "./sales-list";
import { SellScreen } from "./sell";

type Pane = "sell" | "sales" | "close";

/** Who is logged in at the till. Held by the app shell so a look at the
 * gate or setup screen does not log the cashier out; "Lock" does. */
export interface CashierSession {
  staff: StaffView;
  /** Kept only between login and opening the shift, which asks for it again. */
  pin: string;
}

export function CashierScreen(props: {
  status: Status | null;
  onChanged: () => void;
  session: CashierSession | null;
  onSession: (s: CashierSession | null) => void;
}) {
  const { status, onChanged, session, onSession } = props;
  const staff = session?.staff ?? null;
  const [pane, setPane] = useState<Pane>("sell");
  const [zReport, setZReport] = useState<ShiftReport | null>(null);

  const lock = () => {
    onSession(null);
    setPane("sell");
  };

  if (zReport) {
    return (
      <ZReportView
        report={zReport}
        onDone={() => {
          setZReport(null);
          lock();
        }}
      />
    );
  }
  if (!staff) {
    return (
      <Login
        status={status}
        onLogin={(s, p) => onSession({ staff: s, pin: p })}
      />
    );
  }
  if (!status) {
    // Whether a shift is open is not known yet: showing the till now and
    // the float form a moment later would swallow what the cashier types.
    return (
      <p class="muted" data-testid="cashier-loading">
        Loading…
      </p>
    );
  }
  if (!status.shift) {
    return (
      <OpenShift
        staff={staff}
        pin={session?.pin ?? ""}
        onOpened={() => {
          onSession({ staff, pin: "" });
          onChanged();
        }}
        onCancel={lock}
      />
    );
  }
  return (
    <div class="cashier">
      <div class="subtabs" role="tablist">
        <button type="button" class={pane === "sell" ? "active" : ""} data-testid="pane-sell" onClick={() => setPane("sell")}>
          Sell
        </button>
        <button type="button" class={pane === "sales" ? "active" : ""} data-testid="pane-sales" onClick={() => setPane("sales")}>
          Sales today
        </button>
        <button type="button" class={pane === "close" ? "active" : ""} data-testid="pane-close" onClick={() => setPane("close")}>
          Close shift
        </button>
        <span class="grow" />
        <span class="muted" data-testid="cashier-name">
          {staff.name}
          {status?.shift && status.shift.cashier !== staff.name ? ` (shift of ${status.shift.cashier})` : ""}
        </span>
        <button type="button" data-testid="lock" onClick={lock}>
          Lock
        </button>
      </div>
      {pane === "sell" ? (
        <SellScreen status={status} onSold={onChanged} />
      ) : pane === "sales" ? (
        <SalesList onChanged={onChanged} />
      ) : (
        <CloseShift
          onClosed={(r) => {
            setZReport(r);
            onChanged();
          }}
        />
      )}
    </div>
  );
}

function Login({ status, onLogin }: { status: Status | null; onLogin: (s: StaffView, pin: string) => void }) {
  const backend = useBackend();
  const [pin, setPin] = useState("");
  const { busy, error, run } = useAction();
  const first = useFirstFocus<HTMLInputElement>();
  const submit = async (e: Event) => {
    e.preventDefault();
    const staff = await run(() => backend.login(pin));
    if (staff) onLogin(staff, pin);
    else setPin("");
  };
  return (
    <form class="panel narrow" onSubmit={submit} data-testid="login-form">
      <h1>Log in</h1>
      {status?.shift ? (
        <p class="muted">
          Shift open since {formatTime(status.shift.opened_at, false)} ({status.shift.cashier}).
        </p>
      ) : null}
      <Field label="Your PIN">
        <input
          type="password"
          inputMode="numeric"
          autocomplete="off"
          class="pin"
          data-testid="pin-input"
          ref={first}
          value={pin}
          onInput={(e) => setPin(e.currentTarget.value)}
        />
      </Field>
      <ErrorBox message={error} />
      <button type="submit" class="primary big" data-testid="login-submit" disabled={busy || pin.length === 0}>
        Log in
      </button>
    </form>
  );
}

function OpenShift(props: { staff: StaffView; pin: string; onOpened: () => void; onCancel: () => void }) {
  const backend = useBackend();
  const [floatText, setFloatText] = useState("");
  const { busy, error, setError, run } = useAction();
  const first = useFirstFocus<HTMLInputElement>();
  const float = parseMoney(floatText);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (float === null) return setError("Type the cash in the drawer, e.g. 150 or 150.00.");
    const shift = await run(() => backend.openShift(props.pin, float));
    if (shift) props.onOpened();
  };
  return (
    <form class="panel narrow" onSubmit={submit} data-testid="open-shift-form">
      <h1>Open a shift</h1>
      <p>
        Hello {props.staff.name}. Count the cash in the drawer before the first sale.
      </p>
      <Field label="Opening float (cash in the drawer)">
        <input
          inputMode="decimal"
          class="money-input"
          data-testid="float-input"
          ref={first}
          value={floatText}
          autocomplete="off"
          onInput={(e) => setFloatText(e.currentTarget.value)}
        />
      </Field>
      {float !== null ? (
        <p class="muted">
          Float: <Money cents={float} />
        </p>
      ) : null}
      <ErrorBox message={error} />
      <div class="row">
        <button type="submit" class="primary big" data-testid="open-shift" disabled={busy}>
          Open shift
        </button>
        <button type="button" class="big" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
      <p class="muted small">{floatText && float === null ? `"${floatText}" is not an amount; ${formatMoney(15000)} is typed 150.` : ""}</p>
    </form>
  );
}
