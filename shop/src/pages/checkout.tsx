// The visitor's details and consent, under the hold's countdown; then off
// to the payment provider. The hold is given back when the visitor leaves
// (Cancel, another page, the tab closed) unless they went to pay.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError, type Hold } from "../api";
import { ErrorText, Heading, Link, useShop } from "../app";
import { countdown, durationWords, longDate, money, slotDate, slotTime } from "../format";
import { useNow } from "../hooks";
import { productName } from "../i18n";
import { dropHold, loadHold, saveCheckoutSlot } from "../session";
import { useAttemptKey } from "./slot";

/** Seconds left at which the countdown is read out (not every second). */
const ANNOUNCE_AT = [300, 120, 60, 30];

export const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** What the live region says for `leftMs`, or null when it stays quiet. */
export function announcement(prevMs: number, leftMs: number): number | null {
  for (const s of ANNOUNCE_AT) if (prevMs > s * 1000 && leftMs <= s * 1000) return s;
  return null;
}

type Phase = "form" | "paying" | "expired" | "released";

export function CheckoutPage({ holdId }: { holdId: string }) {
  const shop = useShop();
  const { t, lang, api } = shop;
  const [hold] = useState<Hold | null>(() => loadHold(holdId));
  const [phase, setPhase] = useState<Phase>("form");
  const phaseRef = useRef<Phase>("form");
  phaseRef.current = phase;
  // Ticks every second; the time itself is the server's (device clocks drift).
  const now = useNow(1000) - Date.now() + shop.now();
  const left = hold ? Date.parse(hold.expires_at) - now : 0;
  const prevLeft = useRef(left);
  const [spoken, setSpoken] = useState("");
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [terms, setTerms] = useState(false);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [failure, setFailure] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const keyFor = useAttemptKey();
  const endRef = useRef<HTMLHeadingElement>(null);

  // Leaving the page gives the places back, unless the visitor went to pay.
  // (Registered as the page appears, not a frame later.)
  useLayoutEffect(() => {
    if (!hold) return;
    const onHide = () => {
      if (phaseRef.current === "form") {
        api.releaseOnExit(holdId);
        dropHold(holdId);
      }
    };
    addEventListener("pagehide", onHide);
    return () => {
      removeEventListener("pagehide", onHide);
      if (phaseRef.current === "form") {
        void api.releaseHold(holdId).catch(() => undefined);
        dropHold(holdId);
      }
    };
  }, [holdId]);

  useEffect(() => {
    if (!hold || phase !== "form") return;
    const s = announcement(prevLeft.current, left);
    prevLeft.current = left;
    if (s !== null) setSpoken(t("held_announce", { time: durationWords(lang, s * 1000) }));
    if (left <= 0) {
      setPhase("expired");
      dropHold(holdId);
    }
  }, [now]);

  useEffect(() => {
    if (phase === "expired" || phase === "released") endRef.current?.focus();
  }, [phase]);

  if (!hold) {
    return (
      <section aria-labelledby="page-title">
        <Heading>{t("checkout_title")}</Heading>
        <p>{t("hold_missing")}</p>
        <p>
          <Link href="/">{t("back_calendar")}</Link>
        </p>
      </section>
    );
  }
  const date = slotDate(hold.slot_id);
  const at = slotTime(hold.slot_id);

  if (phase === "expired" || phase === "released") {
    return (
      <section aria-labelledby="page-title">
        <Heading>{t("checkout_title")}</Heading>
        <h2 tabIndex={-1} ref={endRef} id="hold-ended">
          {t(phase === "expired" ? "expired_title" : "released_title")}
        </h2>
        <p>{t(phase === "expired" ? "expired_text" : "released_text")}</p>
        <p>
          <Link href={`/slot/${hold.slot_id}`} class="button primary">
            {t("start_again")}
          </Link>{" "}
          <Link href="/">{t("back_calendar")}</Link>
        </p>
      </section>
    );
  }

  const submit = async (e: Event) => {
    e.preventDefault();
    const errs: Record<string, string> = {};
    if (!name.trim()) errs.name = t("name_missing");
    if (!EMAIL.test(email.trim())) errs.email = t("email_bad");
    if (!terms) errs.terms = t("terms_missing");
    setErrors(errs);
    setFailure(null);
    const first = ["name", "email", "terms"].find((k) => errs[k]);
    if (first) {
      document.getElementById(`f-${first}`)?.focus();
      return;
    }
    const body = { name: name.trim(), email: email.trim(), language: lang, accept_terms: terms };
    setBusy(true);
    try {
      const c = await api.checkout(holdId, body, keyFor(body));
      setPhase("paying");
      phaseRef.current = "paying";
      saveCheckoutSlot(c.checkout_id, hold.slot_id);
      shop.redirect(c.redirect_url);
    } catch (err) {
      if (err instanceof ApiError && err.code === "hold_expired") {
        setPhase("expired");
        dropHold(holdId);
      } else if (err instanceof ApiError && err.code === "terms_not_accepted") {
        setErrors({ terms: t("terms_missing") });
        document.getElementById("f-terms")?.focus();
      } else {
        setFailure(err);
      }
    } finally {
      setBusy(false);
    }
  };

  const cancel = async () => {
    setBusy(true);
    try {
      await api.releaseHold(holdId);
    } catch {
      // Already gone or unreachable: it expires by itself.
    }
    dropHold(holdId);
    setBusy(false);
    setPhase("released");
  };

  const described = (k: string, hint?: string) =>
    [hint, errors[k] ? `f-${k}-error` : undefined].filter(Boolean).join(" ") || undefined;

  return (
    <section aria-labelledby="page-title">
      <Heading>{t("checkout_title")}</Heading>
      <div class="timer" role="timer" aria-labelledby="timer-label" id="countdown">
        <span id="timer-label" class="visually-hidden">
          {t("held_label")}
        </span>
        <span class="timer-clock">{countdown(left)}</span>
        <span class="timer-text">{t("held_until")}</span>
      </div>
      {/* Read out at a few moments only (5, 2, 1 minute, 30 s), not every second. */}
      <p class="visually-hidden" aria-live="polite" id="countdown-announce">
        {spoken}
      </p>
      <h2>{t("summary")}</h2>
      <div class="summary" id="summary">
        <p>
          <strong>{longDate(lang, date)}</strong>, {at}
        </p>
        <ul>
          {hold.lines.map((l) => (
            <li key={l.product_id}>
              {l.quantity} × {productName(lang, l.product_id, l.name)} — {money(lang, { amount: l.amounts.gross, currency: hold.total.currency })}
            </li>
          ))}
        </ul>
        <p>
          {t("total")} <strong>{money(lang, hold.total)}</strong>
        </p>
      </div>
      <form onSubmit={submit} noValidate class="details">
        <div class="field">
          <label for="f-name">{t("name")}</label>
          <input
            id="f-name"
            type="text"
            autoComplete="name"
            maxLength={100}
            value={name}
            aria-invalid={errors.name ? true : undefined}
            aria-describedby={described("name")}
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
          />
          {errors.name ? (
            <span class="field-error" id="f-name-error">
              {errors.name}
            </span>
          ) : null}
        </div>
        <div class="field">
          <label for="f-email">{t("email")}</label>
          <input
            id="f-email"
            type="email"
            autoComplete="email"
            maxLength={254}
            value={email}
            aria-invalid={errors.email ? true : undefined}
            aria-describedby={described("email", "f-email-hint")}
            onInput={(e) => setEmail((e.target as HTMLInputElement).value)}
          />
          <span class="hint" id="f-email-hint">
            {t("email_hint")}
          </span>
          {errors.email ? (
            <span class="field-error" id="f-email-error">
              {errors.email}
            </span>
          ) : null}
        </div>
        <div class="field check">
          <input
            id="f-terms"
            type="checkbox"
            checked={terms}
            aria-invalid={errors.terms ? true : undefined}
            aria-describedby={described("terms", "f-terms-hint")}
            onChange={(e) => setTerms((e.target as HTMLInputElement).checked)}
          />
          <label for="f-terms">{t("accept_terms")}</label>
          <span class="hint" id="f-terms-hint">
            {t("terms_hint", { hours: shop.config.cancel_deadline_hours })}
          </span>
          {errors.terms ? (
            <span class="field-error" id="f-terms-error">
              {errors.terms}
            </span>
          ) : null}
        </div>
        {shop.config.payment_provider === "demo" ? <p class="hint">{t("demo_note")}</p> : null}
        {failure ? <ErrorText error={failure} /> : null}
        {phase === "paying" ? <p role="status">{t("redirecting")}</p> : null}
        <div class="actions">
          <button type="submit" class="primary" id="pay" disabled={busy || phase === "paying"}>
            {t("pay", { amount: money(lang, hold.total) })}
          </button>
          <button type="button" id="cancel-hold" onClick={cancel} disabled={busy || phase === "paying"}>
            {t("cancel_hold")}
          </button>
        </div>
      </form>
    </section>
  );
}
