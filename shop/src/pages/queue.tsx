// The waiting room of a high-demand sale: where the visitor stands, how
// long it should take, and, when it is their turn, the way into the shop.
// The page asks the server as often as it says (more often near the front);
// a place is kept in localStorage, so a reload or another tab finds it.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, type PlaceStatus } from "../api";
import { ErrorText, Heading, useShop } from "../app";
import { durationWords, longDate, time } from "../format";
import { useAvailability, useNow } from "../hooks";
import { forget, keep, kept } from "../queue";

/** Answers that mean the kept place is not usable here: take a new one. */
const STALE = new Set(["bad_place", "unknown_place", "place_not_yours", "place_required"]);

export function QueuePage({ room }: { room: string }) {
  const shop = useShop();
  const { t, api, lang, tz } = shop;
  const info = shop.config.waiting_rooms?.find((r) => r.id === room);
  const date = new URLSearchParams(location.search).get("date") ?? info?.from ?? "";
  const [status, setStatus] = useState<PlaceStatus | null>(null);
  const [failure, setFailure] = useState<unknown>(null);
  const [again, setAgain] = useState(0);
  const now = useNow(1000);
  const go = useRef<HTMLButtonElement>(null);
  const state = status?.state;
  // A visitor in another tab learns it is their turn from the tab's title;
  // on the page, the way in takes the focus.
  useEffect(() => {
    if (state !== "admitted") return;
    document.title = `${t("queue_your_turn")} · ${shop.config.museum}`;
    go.current?.focus();
  }, [state]);
  // The day's places arrive by push: the moment the last one goes, ask
  // where the line stands, so a sell-out is shown at once, not at the next
  // question.
  const day = useAvailability(api, date, shop.pollMs);
  const gone = !!day.data && day.data.slots.length > 0 && day.data.slots.every((s) => s.past || s.available === 0);
  useEffect(() => {
    if (!gone) return;
    // The line learns of it at its next tick (a quarter second).
    const timer = setTimeout(() => setAgain((n) => n + 1), 600);
    return () => clearTimeout(timer);
  }, [gone]);

  useEffect(() => {
    if (!info) return;
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const step = async () => {
      let next = 5000;
      try {
        const k = kept(room);
        let s: PlaceStatus;
        if (!k) {
          s = await api.queueJoin(room);
        } else {
          try {
            s = await api.queuePlace(room, k.place);
          } catch (e) {
            if (!(e instanceof ApiError && STALE.has(e.code))) throw e;
            forget(room);
            s = await api.queueJoin(room);
          }
        }
        if (stop) return;
        keep(room, s);
        setStatus(s);
        setFailure(null);
        next = s.poll_after_ms;
      } catch (e) {
        if (stop) return;
        setFailure(e);
      }
      timer = setTimeout(step, Math.max(500, next));
    };
    void step();
    return () => {
      stop = true;
      if (timer) clearTimeout(timer);
    };
  }, [room, again]);

  if (!info) {
    return (
      <>
        <Heading>{t("queue_unknown")}</Heading>
      </>
    );
  }
  const leave = async () => {
    const k = kept(room);
    if (k) await api.queueLeave(room, k.place).catch(() => undefined);
    forget(room);
    shop.navigate("/");
  };
  const rejoin = () => {
    forget(room);
    setStatus(null);
    setAgain((n) => n + 1);
  };

  return (
    <>
      <Heading>{t("queue_title", { name: info.name })}</Heading>
      {date && <p class="hint">{longDate(lang, date)}</p>}
      {failure !== null && <ErrorText error={failure} />}
      {status === null && failure === null && <p>{t("loading")}</p>}
      <div aria-live="polite" data-state={status?.state}>
        {status?.state === "before_opening" && (
          <>
            <p class="queue-big">{t("queue_opens", { time: time(lang, status.opens_at, tz) })}</p>
            <p>{t("queue_draw")}</p>
            <p>{t("queue_present", { n: status.waiting })}</p>
          </>
        )}
        {status?.state === "waiting" && (
          <>
            <p class="queue-big">
              {t("queue_position")} <strong data-position={status.position ?? ""}>{status.position}</strong>
            </p>
            <p>{t("queue_ahead", { n: status.ahead ?? 0 })}</p>
            {status.eta_seconds !== null && (
              <p data-eta={status.eta_seconds}>
                {t("queue_eta", {
                  d: durationWords(lang, status.eta_seconds * 1000),
                  e: durationWords(lang, (status.eta_error_seconds ?? 0) * 1000),
                })}
              </p>
            )}
            <p class="hint">{t("queue_keep_open")}</p>
          </>
        )}
        {status?.state === "admitted" && (
          <>
            <p class="queue-big">{t("queue_your_turn")}</p>
          </>
        )}
        {status?.state === "sold_out" && (
          <>
            <p class="queue-big">{t("queue_sold_out")}</p>
            <p>{t("queue_sold_out_more")}</p>
            <button type="button" onClick={() => shop.navigate(`/day/${encodeURIComponent(date)}`)}>
              {t("queue_waitlist")}
            </button>
          </>
        )}
        {status?.state === "over" && (
          <>
            <p class="queue-big">{t("queue_over")}</p>
            <button type="button" class="primary" onClick={rejoin}>
              {t("queue_rejoin")}
            </button>
          </>
        )}
      </div>
      {/* Countdowns live outside the announced region: read on demand, not every second. */}
      {status?.state === "before_opening" && (
        <p class="hint">
          {t("queue_opens_in", { d: durationWords(lang, Math.max(0, Date.parse(status.opens_at) - shop.now())) })}
        </p>
      )}
      {status?.state === "admitted" && (
        <>
          {status.pass_until && (
            <p>
              {t("queue_until", {
                time: time(lang, status.pass_until, tz),
                d: durationWords(lang, Math.max(0, Date.parse(status.pass_until) - Math.max(now, shop.now()))),
              })}
            </p>
          )}
          <button ref={go} type="button" class="primary" onClick={() => shop.navigate(`/day/${encodeURIComponent(date)}`)}>
            {t("queue_choose")}
          </button>
        </>
      )}
      {status && status.state !== "over" && (
        <p>
          <button type="button" class="link" onClick={leave}>
            {t("queue_leave")}
          </button>
        </p>
      )}
    </>
  );
}
