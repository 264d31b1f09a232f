// Places held for a visitor from the waiting list: choose the tickets for
// them (at most the party's admissions), then the usual checkout.
import { useEffect, useState } from "preact/hooks";
import { ApiError, type CartLine, type Catalogue, type Offer } from "../api";
import { ErrorText, Heading, useShop } from "../app";
import { dateTime, longDate, slotDate, slotTime } from "../format";
import { saveHold } from "../session";
import { TicketChooser } from "../tickets";
import { loadCatalogue, useAttemptKey } from "./slot";

export function OfferPage({ token }: { token: string }) {
  const shop = useShop();
  const { t, lang, api, tz } = shop;
  const [offer, setOffer] = useState<Offer | null>(null);
  const [catalogue, setCatalogue] = useState<Catalogue | null>(null);
  const [failure, setFailure] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const keyFor = useAttemptKey();
  useEffect(() => {
    api.offer(token).then(setOffer, setFailure);
    loadCatalogue(api).then(setCatalogue, setFailure);
  }, [token]);

  const take = async (items: CartLine[]) => {
    setBusy(true);
    setFailure(null);
    try {
      const hold = await api.offerHold(token, items, keyFor({ token, items }));
      saveHold(hold);
      shop.navigate(`/checkout/${hold.hold_id}`);
    } catch (e) {
      // Taken or expired meanwhile: say it as the page would on arrival.
      if (e instanceof ApiError && e.code === "offer_taken") setOffer((o) => (o ? { ...o, state: "taken" } : o));
      else if (e instanceof ApiError && e.code === "offer_expired") setOffer((o) => (o ? { ...o, state: "expired" } : o));
      else setFailure(e);
    } finally {
      setBusy(false);
    }
  };

  const unknown = failure instanceof ApiError && failure.status === 404;
  return (
    <section aria-labelledby="page-title">
      <Heading>{t("offer_title")}</Heading>
      {unknown ? <p role="alert">{t("offer_unknown")}</p> : failure ? <ErrorText error={failure} /> : null}
      {!offer || !catalogue ? (
        unknown ? null : <p>{t("loading")}</p>
      ) : offer.state === "expired" ? (
        <p>{t("offer_expired")}</p>
      ) : offer.state === "taken" ? (
        <p>{t("offer_taken")}</p>
      ) : (
        <>
          <p>
            <strong>
              {longDate(lang, slotDate(offer.slot_id))}, {slotTime(offer.slot_id)}
            </strong>
          </p>
          <p>{t("offer_text", { n: offer.party, time: dateTime(lang, offer.expires_at, tz).time })}</p>
          <p class="hint">{t("offer_party", { n: offer.party })}</p>
          <TicketChooser catalogue={catalogue} available={offer.party} maxAdmissions={offer.party} busy={busy} onSubmit={take} />
        </>
      )}
    </section>
  );
}
