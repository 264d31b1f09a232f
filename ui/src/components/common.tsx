import type { ComponentChildren } from "preact";
import { formatMoney } from "../money";

/** The engine's refusal, where the cashier is looking. */
export function ErrorBox({ message, testid = "error" }: { message: string | null; testid?: string }) {
  if (!message) return null;
  return (
    <div class="error" role="alert" data-testid={testid}>
      {message}
    </div>
  );
}

export function Notice({ children, testid }: { children: ComponentChildren; testid?: string }) {
  return (
    <div class="notice" role="status" data-testid={testid}>
      {children}
    </div>
  );
}

export function Money({ cents, currency = "EUR", testid }: { cents: number; currency?: string; testid?: string }) {
  return (
    <span class="money" data-testid={testid} data-cents={cents}>
      {formatMoney(cents, currency)}
    </span>
  );
}

/** A labelled field; the label is what a screen reader and the e2e test see. */
export function Field({ label, hint, children }: { label: string; hint?: string; children: ComponentChildren }) {
  return (
    <label class="field">
      <span class="field-label">{label}</span>
      {children}
      {hint ? <span class="field-hint">{hint}</span> : null}
    </label>
  );
}

export function Kbd({ children }: { children: ComponentChildren }) {
  return <kbd>{children}</kbd>;
}
