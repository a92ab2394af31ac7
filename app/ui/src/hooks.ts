// Data loading with auto-refresh: the page shows the last good data while a refresh runs, and
// an error banner when the daemon does not answer.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

export interface Polled<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

export function usePoll<T>(load: () => Promise<T>, everyMs: number | null, deps: unknown[] = []): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const alive = useRef(true);
  const run = useCallback(() => {
    load()
      .then((d) => {
        if (alive.current) {
          setData(d);
          setError(null);
        }
      })
      .catch((e: Error) => alive.current && setError(e.message));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(() => {
    alive.current = true;
    run();
    const t = everyMs ? window.setInterval(() => document.hidden || run(), everyMs) : undefined;
    return () => {
      alive.current = false;
      if (t) window.clearInterval(t);
    };
  }, [run, everyMs]);
  return { data, error, reload: run };
}
