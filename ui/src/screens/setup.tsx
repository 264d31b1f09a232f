// Setup: enrol this machine with the server (a one-time code from
// `tessera-server enrol`), choose the receipt printer and try it, and choose
// whether the machine opens on the till or the gate.
import type { Ref } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { PrintOutcome, Status } from "../api";
import { useBackend } from "../backend-context";
import { ErrorBox, Field, Notice } from "../components/common";
import { useAction, useFirstFocus, useTypedField } from "../hooks";

const PRINTER_KINDS = [
  { prefix: "none", label: "None", example: "none" },
  { prefix: "network:", label: "Network", example: "network:192.168.1.50:9100" },
  { prefix: "file:", label: "File", example: "file:/dev/usb/lp0" },
  { prefix: "usb:", label: "USB", example: "usb:04b8:0202" },
];

export function printOutcomeText(outcome: PrintOutcome): string {
  switch (outcome.status) {
    case "printed":
      return "Printed.";
    case "no_printer":
      return "No printer is configured: nothing was printed.";
    case "failed":
      return `The printer failed: ${outcome.message}`;
  }
}

function PrinterField({ value, onInput }: { value: string; onInput: (v: string) => void }) {
  return (
    <Field label="Receipt printer" hint="none, network:HOST:PORT, file:PATH or usb:VID:PID">
      <div class="row">
        <input
          class="grow"
          data-testid="setup-printer"
          value={value}
          spellcheck={false}
          autocomplete="off"
          onInput={(e) => onInput(e.currentTarget.value)}
        />
        {PRINTER_KINDS.map((k) => (
          <button
            type="button"
            class="small"
            title={k.example}
            onClick={() => onInput(k.prefix === "none" ? "none" : value.startsWith(k.prefix) ? value : k.prefix)}
          >
            {k.label}
          </button>
        ))}
      </div>
    </Field>
  );
}

function ModeField({
  value,
  onChange,
  selectRef,
}: {
  value: "sell" | "gate";
  onChange: (v: "sell" | "gate") => void;
  selectRef?: Ref<HTMLSelectElement>;
}) {
  return (
    <Field label="This machine is a">
      <select ref={selectRef} data-testid="setup-role" value={value} onChange={(e) => onChange(e.currentTarget.value as "sell" | "gate")}>
        <option value="sell">Counter (sell tickets)</option>
        <option value="gate">Gate (scan tickets)</option>
      </select>
    </Field>
  );
}

export function SetupScreen(props: {
  enrolled: boolean;
  status: Status | null;
  onEnrolled: (s: Status, mode: "sell" | "gate") => void;
  onChanged: () => void;
}) {
  return props.enrolled ? <Configure {...props} /> : <Enrol onEnrolled={props.onEnrolled} />;
}

function Enrol({ onEnrolled }: { onEnrolled: (s: Status, mode: "sell" | "gate") => void }) {
  const backend = useBackend();
  // An installer's defaults arrive after the form is on screen, possibly
  // while someone is typing: they fill only the fields nobody typed in.
  const server = useTypedField("http://127.0.0.1:8080");
  const codeField = useTypedField("");
  const nameField = useTypedField("Counter 1");
  const printerField = useTypedField("none");
  const serverUrl = server.value;
  const code = codeField.value;
  const name = nameField.value;
  const printer = printerField.value;
  const [mode, setMode] = useState<"sell" | "gate">("sell");
  const [ready, setReady] = useState(false);
  const { busy, error, setError, run } = useAction();
  const first = useFirstFocus<HTMLInputElement>();

  useEffect(() => {
    let gone = false;
    backend.setupDefaults().then(
      (d) => {
        if (gone) return;
        server.suggest(d.server_url);
        codeField.suggest(d.code);
        nameField.suggest(d.name);
        printerField.suggest(d.printer);
        setReady(true);
      },
      () => {
        if (!gone) setReady(true);
      },
    );
    return () => {
      gone = true;
    };
    // The suggest functions are stable.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [backend]);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!code.trim()) return setError("Type the enrolment code the server printed.");
    if (!name.trim()) return setError("Give this machine a name (e.g. Counter 1).");
    const status = await run(async () => {
      const s = await backend.enrol(serverUrl.trim(), code.trim(), name.trim());
      // The printer is set after enrolment because it is stored in the
      // engine's database, which enrolment creates.
      if (printer.trim() && printer.trim() !== "none") await backend.setPrinter(printer.trim());
      return s;
    });
    if (status) onEnrolled(status, mode);
  };

  return (
    <form class="panel narrow" onSubmit={submit} data-testid="setup-form" data-ready={ready ? "true" : "false"}>
      <h1>Set up this machine</h1>
      <p class="muted">
        Ask the administrator for a one-time code: <code>tessera-server enrol --role counter --name "Counter 1"</code>.
      </p>
      <Field label="Server address">
        <input
          ref={first}
          data-testid="setup-server"
          value={serverUrl}
          spellcheck={false}
          autocomplete="off"
          onInput={(e) => server.onInput(e.currentTarget.value)}
        />
      </Field>
      <Field label="Enrolment code">
        <input
          data-testid="setup-code"
          value={code}
          spellcheck={false}
          autocomplete="off"
          onInput={(e) => codeField.onInput(e.currentTarget.value)}
        />
      </Field>
      <Field label="Name of this machine">
        <input data-testid="setup-name" value={name} autocomplete="off" onInput={(e) => nameField.onInput(e.currentTarget.value)} />
      </Field>
      <ModeField value={mode} onChange={setMode} />
      <PrinterField value={printer} onInput={printerField.onInput} />
      <ErrorBox message={error} />
      <button type="submit" class="primary big" data-testid="enrol-submit" disabled={busy}>
        {busy ? "Contacting the server…" : "Enrol"}
      </button>
    </form>
  );
}

function Configure({ status, onChanged }: { status: Status | null; onChanged: () => void }) {
  const backend = useBackend();
  const printerField = useTypedField(status?.printer ?? "none");
  const printer = printerField.value;
  const setPrinter = printerField.onInput;
  const [mode, setMode] = useState<"sell" | "gate">(localStorage.getItem("tessera.mode") === "gate" ? "gate" : "sell");
  const [result, setResult] = useState<string | null>(null);
  const { busy, error, run } = useAction();
  const first = useFirstFocus<HTMLSelectElement>();

  // Pick up the engine's printer once the status arrives after a restart,
  // unless someone has already typed in the field.
  useEffect(() => {
    if (status) printerField.suggest(status.printer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [status?.printer]);

  const save = async () => {
    setResult(null);
    const ok = await run(async () => {
      await backend.setPrinter(printer.trim() || "none");
      return true;
    });
    if (ok) {
      setResult("Printer saved.");
      onChanged();
    }
  };
  const testPrint = async () => {
    setResult(null);
    const outcome = await run(async () => {
      await backend.setPrinter(printer.trim() || "none");
      return backend.testPrint();
    });
    if (outcome) setResult(printOutcomeText(outcome));
    onChanged();
  };
  const saveMode = (m: "sell" | "gate") => {
    setMode(m);
    localStorage.setItem("tessera.mode", m);
  };

  return (
    <div class="panel narrow" data-testid="setup-configure">
      <h1>This machine</h1>
      {status ? (
        <dl class="facts">
          <dt>Name</dt>
          <dd data-testid="device-name">{status.device_name}</dd>
          <dt>Museum</dt>
          <dd>{status.museum}</dd>
          <dt>Enrolled as</dt>
          <dd>{status.role}</dd>
          <dt>Server</dt>
          <dd>{status.server_url}</dd>
        </dl>
      ) : null}
      <ModeField value={mode} onChange={saveMode} selectRef={first} />
      <PrinterField value={printer} onInput={setPrinter} />
      <div class="row">
        <button type="button" class="big" data-testid="save-printer" disabled={busy} onClick={save}>
          Save printer
        </button>
        <button type="button" class="big" data-testid="test-print" disabled={busy} onClick={testPrint}>
          Test print
        </button>
      </div>
      <ErrorBox message={error} />
      {result ? <Notice testid="setup-result">{result}</Notice> : null}
    </div>
  );
}
