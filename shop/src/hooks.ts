import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import type { Api, Availability } from "./api";

/**
 * Loads `fetcher` now and again every `everyMs` (0: once) while the page is
 * shown; a failed refresh keeps the last good answer and reports the error.
 * Not while the tab is hidden: nobody is looking, and the next visible tick
 * catches up.
 */
export function usePoll<T>(fetcher: () => Promise<T>, everyMs: number, deps: unknown[]) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  // When the last good answer arrived (device clock): pages say how old
  // the numbers they show are.
  const [at, setAt] = useState<number | null>(null);
  const alive = useRef(true);
  const run = useCallback(async () => {
    try {
      const value = await fetcher();
      if (!alive.current) return;
      setData(value);
      setAt(Date.now());
      setError(null);
    } catch (e) {
      if (alive.current) setError(e);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(() => {
    alive.current = true;
    void run();
    let timer: ReturnType<typeof setInterval> | undefined;
    if (everyMs > 0) {
      timer = setInterval(() => {
        if (typeof document === "undefined" || document.visibilityState !== "hidden") void run();
      }, everyMs);
    }
    return () => {
      alive.current = false;
      if (timer) clearInterval(timer);
    };
  }, [run, everyMs]);
  return { data, error, at, refresh: run };
}

/**
 * A day's places: pushed by the server while its stream is up (`live`),
 * polled every `pollMs` while it is not. The newest answer wins.
 */
export function useAvailability(api: Api, date: string, pollMs: number) {
  const [live, setLive] = useState(false);
  const [pushed, setPushed] = useState<{ data: Availability; at: number } | null>(null);
  const poll = usePoll(() => api.availability(date), live ? 0 : pollMs, [date]);
  useEffect(() => {
    setPushed(null);
    const stop = api.watchAvailability(date, (data) => setPushed({ data, at: Date.now() }), setLive);
    return () => {
      stop?.();
      setLive(false);
    };
  }, [api, date]);
  // An answer for the day shown before (a late poll, a closing stream)
  // is no answer for this one.
  const polled = poll.data?.date === date ? poll.data : null;
  const fromPush = pushed !== null && pushed.data.date === date && (polled === null || poll.at === null || pushed.at >= poll.at);
  return {
    data: fromPush ? pushed.data : polled,
    error: live ? null : poll.error,
    at: fromPush ? pushed.at : polled ? poll.at : null,
    live,
    refresh: poll.refresh,
  };
}

/** The current time, ticking every `everyMs`. */
export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}
