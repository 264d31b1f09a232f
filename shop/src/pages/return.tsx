// Back from the payment page: waits for the verified payment (the provider's
// signed event reaches the server on its own path), then opens the booking.
import { useEffect, useState } from "preact/hooks";
import { ApiError } from "../api";
import { ErrorText, Heading, Link, useShop } from "../app";
import { usePoll } from "../hooks";
import { loadCheckoutSlot } from "../session";

/** After this long still unconfirmed, the page says it is taking a while. */
const SLOW_MS = 30_000;

export function ReturnPage({ checkoutId }: { checkoutId: string }) {
  const shop = useShop();
  const { t, api } = shop;
  const [started] = useState(Date.now());
  const [slow, setSlow] = useState(false);
  const status = usePoll(() => api.checkoutStatus(checkoutId), Math.min(1500, shop.pollMs), [checkoutId]);
  const state = status.data?.state;
  useEffect(() => {
    if (state === "confirmed" && status.data?.booking_token) {
      shop.navigate(`/booking/${status.data.booking_token}?confirmed=1`, { replace: true });
    }
  }, [state]);
  useEffect(() => {
    const timer = setTimeout(() => setSlow(true), Math.max(0, SLOW_MS - (Date.now() - started)));
    return () => clearTimeout(timer);
  }, []);
  const slot = loadCheckoutSlot(checkoutId);
  const unknown = status.error instanceof ApiError && status.error.status === 404;
  return (
    <section aria-labelledby="page-title">
      <Heading>{t("return_title")}</Heading>
      {unknown ? (
        <p role="alert">{t("return_unknown")}</p>
      ) : state === "failed" ? (
        <>
          <p role="alert">{t("return_failed")}</p>
          <p>
            <Link href={slot ? `/slot/${slot}` : "/"} class="button primary">
              {t("start_again")}
            </Link>
          </p>
        </>
      ) : state === "refunded" ? (
        <>
          <p role="alert">{t("return_refunded")}</p>
          <p>
            <Link href={slot ? `/day/${slot.slice(0, 10)}` : "/"}>{t("start_again")}</Link>
          </p>
        </>
      ) : (
        <>
          <p role="status" id="return-waiting">
            {t("return_waiting")}
          </p>
          {slow ? <p>{t("return_slow")}</p> : null}
          {status.error && !unknown ? <ErrorText error={status.error} /> : null}
        </>
      )}
    </section>
  );
}
