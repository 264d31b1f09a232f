import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { EngineError } from "./api";

/**
 * Runs one engine call at a time for a screen: `busy` disables its buttons
 * (a double tap on "Complete" must not sell twice), and a refusal becomes
 * `error`, the engine's message in words the cashier understands.
 */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const inFlight = useRef(false);
  const run = useCallback(async <T,>(fn: () => Promise<T>): Promise<T | undefined> => {
    if (inFlight.current) return undefined;
    inFlight.current = true;
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (e) {
      setError(EngineError.from(e).message);
      return undefined;
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  }, []);
  return { busy, error, setError, run };
}

/** Calls `fn` now and every `ms` while the component is on screen. */
export function usePoll(fn: () => void | Promise<void>, ms: number, deps: unknown[] = []) {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        await saved.current();
      } finally {
        if (!stopped) timer = setTimeout(tick, ms);
      }
    };
    void tick();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [ms, ...deps]);
}

/** True when a key press belongs to a text field, not to a screen shortcut. */
export function isTyping(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}

/** Screen-wide key handler, removed when the screen goes away. */
export function useKeys(handler: (e: KeyboardEvent) => void, deps: unknown[] = []) {
  const saved = useRef(handler);
  saved.current = handler;
  useEffect(() => {
    const listener = (e: KeyboardEvent) => saved.current(e);
    window.addEventListener("keydown", listener);
    return () => window.removeEventListener("keydown", listener);
  }, deps);
}
