import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { EngineError, type EngineChange } from "./api";
import { useBackend } from "./backend-context";

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

/**
 * Calls `fn` now and again each time the engine reports a change of one of
 * `kinds`: figures on screen follow the engine as it learns of sales, here
 * or pushed from the server, without a polling loop. Changes arriving while
 * `fn` runs are folded into one more call.
 */
export function useEngineRefresh(kinds: readonly EngineChange[], fn: () => void | Promise<void>, deps: unknown[] = []) {
  const backend = useBackend();
  const saved = useRef(fn);
  saved.current = fn;
  const key = kinds.join(",");
  useEffect(() => {
    let stopped = false;
    let running = false;
    let again = false;
    const run = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          await saved.current();
        } while (again && !stopped);
      } finally {
        running = false;
      }
    };
    const stop = backend.onEngineChange((change) => {
      if (!stopped && kinds.includes(change)) void run();
    });
    void run();
    return () => {
      stopped = true;
      stop();
    };
  }, [backend, key, ...deps]);
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

/**
 * Focus for a screen's first field, given once when it appears. Unlike the
 * `autofocus` attribute (which the webview applies at its next rendering
 * update, on a busy machine after typing has begun) this runs as the field
 * is inserted, and never takes focus from a text field the user is already
 * typing in.
 */
export function useFirstFocus<T extends HTMLElement>() {
  const ref = useRef<T>(null);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const active = document.activeElement;
    const typingElsewhere = active !== el && active instanceof HTMLElement && active.isConnected && isTyping(active);
    if (!typingElsewhere) el.focus();
  }, []);
  return ref;
}

/**
 * A field's value that a late answer (defaults, a status arriving after the
 * screen) may fill in, but only until the user has typed in it: what the
 * user typed is never overwritten.
 */
export function useTypedField(initial: string) {
  const [value, setValue] = useState(initial);
  const touched = useRef(false);
  const onInput = useCallback((v: string) => {
    touched.current = true;
    setValue(v);
  }, []);
  const suggest = useCallback((v: string | null | undefined) => {
    if (v != null && !touched.current) setValue(v);
  }, []);
  return { value, onInput, suggest, touched };
}
