// "My booking", opened by its unguessable link: the tickets with their QR
// codes, the PDF, a calendar entry, the email again, and cancellation of
// all or some tickets until the deadline (with a confirmation step).
import QRCode from "qrcode";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, icsUrl, pdfUrl, type Booking, type BookingTicket } from "../api";
import { ErrorText, Heading, useShop } from "../app";
import { dateTime, money } from "../format";
import { useNow } from "../hooks";
import { productName } from "../i18n";
import { useAttemptKey } from "./slot";

/** A ticket's code as an SVG QR image (drawn here: the code never leaves the page). */
export function Qr({ code, label }: { code: string; label: string }) {
  const [src, setSrc] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    QRCode.toString(code, { type: "svg", errorCorrectionLevel: "M", margin: 2 }).then(
      (svg) => live && setSrc(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`),
      () => live && setSrc(null),
    );
    return () => {
      live = false;
    };
  }, [code]);
  return src ? <img class="qr" src={src} alt={label} width={180} height={180} /> : <span class="qr" />;
}

export function BookingPage({ token }: { token: string }) {
  const shop = useShop();
  const { t, lang, api } = shop;
  const [booking, setBooking] = useState<Booking | null>(null);
  const [failure, setFailure] = useState<unknown>(null);
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const [confirming, setConfirming] = useState<string[] | null>(null);
  const [message, setMessage] = useState("");
  const [cancelError, setCancelError] = useState("");
  const [busy, setBusy] = useState(false);
  const keyFor = useAttemptKey();
  const confirmRef = useRef<HTMLHeadingElement>(null);
  const now = useNow(30_000) - Date.now() + shop.now();
  // Straight from payment: say thank you once, without keeping the mark in
  // the address (a bookmark of this page should not thank again).
  const [justConfirmed] = useState(() => new URLSearchParams(location.search).has("confirmed"));
  useEffect(() => {
    if (justConfirmed) history.replaceState(null, "", location.pathname);
  }, []);

  useEffect(() => {
    api.booking(token).then(setBooking, setFailure);
  }, [token]);
  useEffect(() => {
    if (confirming) confirmRef.current?.focus();
  }, [confirming]);

  if (failure) {
    const unknown = failure instanceof ApiError && failure.status === 404;
    return (
      <section aria-labelledby="page-title">
        <Heading>{t("booking_title")}</Heading>
        {unknown ? <p role="alert">{t("booking_unknown")}</p> : <ErrorText error={failure} />}
      </section>
    );
  }
  if (!booking) {
    return (
      <section aria-labelledby="page-title">
        <Heading>{t("booking_title")}</Heading>
        <p>{t("loading")}</p>
      </section>
    );
  }
  const tz = booking.time_zone;
  const when = dateTime(lang, booking.starts_at, tz);
  const deadline = dateTime(lang, booking.cancellable_until, tz);
  const canCancel = now < Date.parse(booking.cancellable_until);
  const valid = booking.tickets.filter((x) => x.state === "valid");
  const refundOf = (ids: string[]) =>
    booking.tickets.filter((x) => ids.includes(x.ticket_id)).reduce((n, x) => n + x.price.amount, 0);

  const ask = (ids: string[]) => {
    setMessage("");
    if (ids.length === 0) {
      setCancelError(t("choose_ticket_to_cancel"));
      return;
    }
    setCancelError("");
    setConfirming(ids);
  };

  const doCancel = async () => {
    if (!confirming) return;
    const ids = confirming;
    setBusy(true);
    try {
      const updated = await api.cancel(token, ids, keyFor({ token, ids }));
      setBooking(updated);
      setChosen(new Set());
      setConfirming(null);
      setMessage(
        t("cancelled_done", { n: ids.length, amount: money(lang, { amount: refundOf(ids), currency: booking.total.currency }) }),
      );
    } catch (e) {
      setConfirming(null);
      setCancelError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  const resend = async () => {
    setBusy(true);
    try {
      await api.resend(token);
      setMessage(t("resent", { email: booking.email }));
    } catch (e) {
      setMessage(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  const stateText = (x: BookingTicket) =>
    t(x.state === "valid" ? "ticket_valid" : x.state === "used" ? "ticket_used" : "ticket_cancelled");

  return (
    <section aria-labelledby="page-title">
      <Heading>{t("booking_title")}</Heading>
      {justConfirmed && !message ? (
        <p class="success" id="confirmed">
          {t("booking_confirmed", { email: booking.email })}
        </p>
      ) : null}
      <div class="summary" id="booking-summary">
        <p>
          <strong>{booking.museum}</strong>
        </p>
        <p>
          <strong>{t("booking_when", { date: when.date, time: when.time })}</strong>
        </p>
        <p>{t("booking_ref", { ref: booking.reference })}</p>
        <p>{t("booking_for", { name: booking.name, email: booking.email })}</p>
        <p>{t("booking_total", { amount: money(lang, booking.total) })}</p>
        {booking.refunded.amount > 0 ? (
          <p id="refunded">{t("booking_refunded", { amount: money(lang, booking.refunded) })}</p>
        ) : null}
      </div>
      <div class="actions">
        <a class="button" href={pdfUrl(token)} id="pdf" download>
          {t("download_pdf")}
        </a>
        <a class="button" href={icsUrl(token)} id="ics" download>
          {t("add_calendar")}
        </a>
        <button type="button" onClick={resend} disabled={busy} id="resend">
          {t("resend")}
        </button>
      </div>
      <p role="status" id="booking-status">
        {message}
      </p>
      <p id="deadline">{canCancel ? t("cancel_until", { date: deadline.date, time: deadline.time }) : t("cancel_passed")}</p>
      <ol class="tickets-list">
        {booking.tickets.map((x, i) => {
          const name = productName(lang, x.product_id, x.product_name);
          return (
            <li key={x.ticket_id} class={`ticket ${x.state}`} data-ticket={x.ticket_id}>
              <h2 class="ticket-title">{t("ticket_n", { n: i + 1, name })}</h2>
              <p>
                <span class={`badge ${x.state}`}>{stateText(x)}</span> · {money(lang, x.price)}
              </p>
              {x.state === "valid" ? <Qr code={x.code} label={t("ticket_qr", { n: i + 1 })} /> : null}
              {x.state !== "cancelled" ? (
                <p class="code">
                  <code>{x.code}</code>
                </p>
              ) : null}
              {canCancel && x.state === "valid" ? (
                <div class="field check">
                  <input
                    type="checkbox"
                    id={`c-${x.ticket_id}`}
                    checked={chosen.has(x.ticket_id)}
                    onChange={(e) => {
                      const next = new Set(chosen);
                      if ((e.target as HTMLInputElement).checked) next.add(x.ticket_id);
                      else next.delete(x.ticket_id);
                      setChosen(next);
                    }}
                  />
                  <label for={`c-${x.ticket_id}`}>
                    {t("cancel_select")} ({t("ticket_n", { n: i + 1, name })})
                  </label>
                </div>
              ) : null}
            </li>
          );
        })}
      </ol>
      {canCancel && valid.length > 0 ? (
        <div class="cancel-box">
          {confirming ? (
            <div class="notice" role="group" aria-labelledby="confirm-title" id="confirm-cancel">
              <h2 id="confirm-title" tabIndex={-1} ref={confirmRef}>
                {t("cancel_confirm_title")}
              </h2>
              <p>
                {t("cancel_confirm_text", {
                  n: confirming.length,
                  amount: money(lang, { amount: refundOf(confirming), currency: booking.total.currency }),
                })}
              </p>
              <div class="actions">
                <button type="button" class="danger" onClick={doCancel} disabled={busy} id="confirm-yes">
                  {t("cancel_confirm")}
                </button>
                <button type="button" onClick={() => setConfirming(null)} disabled={busy} id="confirm-no">
                  {t("cancel_keep")}
                </button>
              </div>
            </div>
          ) : (
            <div class="actions">
              <button type="button" onClick={() => ask([...chosen])} id="cancel-some" aria-describedby={cancelError ? "cancel-error" : undefined}>
                {t("cancel_some")}
              </button>
              <button type="button" onClick={() => ask(valid.map((x) => x.ticket_id))} id="cancel-all">
                {t("cancel_all")}
              </button>
            </div>
          )}
          {cancelError ? (
            <p class="error" id="cancel-error" role="alert">
              {cancelError}
            </p>
          ) : null}
        </div>
      ) : null}
    </section>
  );
}
