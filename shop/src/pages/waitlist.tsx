// The waiting list of a sold-out entry time: an email and a party size.
import { useState } from "preact/hooks";
import { ApiError, type WaitlistEntry } from "../api";
import { ErrorText, Heading, Link, useShop } from "../app";
import { longDate, slotDate, slotTime } from "../format";
import { MAX_ADMISSIONS } from "../tickets";
import { EMAIL } from "./checkout";
import { useAttemptKey } from "./slot";

export function WaitlistPage({ slotId }: { slotId: string }) {
  const { t, lang, api } = useShop();
  const initialParty = Number(new URLSearchParams(location.search).get("party")) || 2;
  const [email, setEmail] = useState("");
  const [party, setParty] = useState(Math.min(MAX_ADMISSIONS, Math.max(1, initialParty)));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [entry, setEntry] = useState<WaitlistEntry | null>(null);
  const [refusal, setRefusal] = useState<string>("");
  const [failure, setFailure] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const keyFor = useAttemptKey();
  const date = slotDate(slotId);

  const submit = async (e: Event) => {
    e.preventDefault();
    const errs: Record<string, string> = {};
    if (!EMAIL.test(email.trim())) errs.email = t("email_bad");
    setErrors(errs);
    setRefusal("");
    setFailure(null);
    if (errs.email) {
      document.getElementById("w-email")?.focus();
      return;
    }
    const body = { slot_id: slotId, email: email.trim(), party, language: lang };
    setBusy(true);
    try {
      setEntry(await api.joinWaitlist(body, keyFor(body)));
    } catch (err) {
      const code = err instanceof ApiError ? err.code : "";
      if (code === "not_sold_out") setRefusal(t("waitlist_not_sold_out"));
      else if (code === "party_too_large") setRefusal(t("waitlist_too_large"));
      else if (code === "slot_past") setRefusal(t("waitlist_past"));
      else setFailure(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="page-title">
      <Heading>{t("waitlist_title", { date: longDate(lang, date), time: slotTime(slotId) })}</Heading>
      <p>
        <Link href={`/day/${date}`}>{longDate(lang, date)}</Link>
      </p>
      {entry ? (
        <p role="status" id="waitlist-done">
          {t("waitlist_done", { n: entry.position, email: email.trim() })}
        </p>
      ) : (
        <>
          <p>{t("waitlist_intro")}</p>
          <form onSubmit={submit} noValidate class="details">
            <div class="field">
              <label for="w-email">{t("email")}</label>
              <input
                id="w-email"
                type="email"
                autoComplete="email"
                maxLength={254}
                value={email}
                aria-invalid={errors.email ? true : undefined}
                aria-describedby={errors.email ? "w-email-error" : undefined}
                onInput={(e) => setEmail((e.target as HTMLInputElement).value)}
              />
              {errors.email ? (
                <span class="field-error" id="w-email-error">
                  {errors.email}
                </span>
              ) : null}
            </div>
            <div class="field">
              <label for="w-party">{t("party")}</label>
              <input
                id="w-party"
                type="number"
                min={1}
                max={MAX_ADMISSIONS}
                value={party}
                onInput={(e) => setParty(Math.min(MAX_ADMISSIONS, Math.max(1, Number((e.target as HTMLInputElement).value) || 1)))}
              />
            </div>
            {refusal ? (
              <p class="error" role="alert">
                {refusal}{" "}
                {refusal === t("waitlist_not_sold_out") ? <Link href={`/slot/${slotId}`}>{t("book_now")}</Link> : null}
              </p>
            ) : null}
            {failure ? <ErrorText error={failure} /> : null}
            <button type="submit" class="primary" disabled={busy} id="join">
              {t("join")}
            </button>
          </form>
        </>
      )}
    </section>
  );
}
