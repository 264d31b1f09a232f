import { useCallback, useEffect, useRef, useState } from "preact/hooks";

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

/** The current time, ticking every `everyMs`. */
export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}
