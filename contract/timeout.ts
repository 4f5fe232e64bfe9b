/**
 * A time limit as an abort signal whose timer ends with the work it bounds: the server's request deadline
 * (routes/prune.ts) and the client's attempt limit (client/mod.ts) both use it. In the contract module, which needs no
 * runtime API, so that the client imports it wherever it runs.
 */

/** A signal that aborts with a `TimeoutError` once its time passes, until `clear()` ends its timer. */
export interface Timeout {
  readonly signal: AbortSignal;
  /** Drops the timer: the work it bounded is done. */
  clear(): void;
}

/**
 * A signal that aborts after `ms` as `AbortSignal.timeout` does (a `TimeoutError` DOMException, here saying `message`),
 * never for `Infinity`, but whose timer `clear()` ends. `AbortSignal.timeout`'s runs for its whole time (a request's
 * ten-minute deadline, a client attempt's eleven minutes by default) and holds the signals made from it until then:
 * measured 2026-11-30 (tests/_request_heap_child.ts), the server's heap after full collections grew by 615-680 bytes
 * for each small request answered within those ten minutes, and by under 30 with this.
 */
export function startTimeout(ms: number, message: string): Timeout {
  const ctl = new AbortController();
  // A timer given Infinity would fire at once.
  if (ms === Infinity) return { signal: ctl.signal, clear: () => {} };
  const timer = setTimeout(() => ctl.abort(new DOMException(message, "TimeoutError")), ms);
  return { signal: ctl.signal, clear: () => clearTimeout(timer) };
}
