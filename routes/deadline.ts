/**
 * Where a request's time went, so that a deadline's answer says whether retrying can help. Time waiting (for the
 * body to arrive, for a compute slot) depends on the server's load: 503 `unavailable`, retry. Time on the request's
 * own work (decoding and checking it, summing `inputs`, computing its layers) would be spent again: once that was at
 * least half the deadline, computed with no other request alongside, 504 `deadline_exceeded`, which clients do not
 * retry.
 */
import { ZpruneError } from "../contract/errors.ts";

/** A request's deadline: `signal` aborts with a `TimeoutError` after the time given, until `clear()` ends it. */
export interface Deadline {
  readonly signal: AbortSignal;
  /** Drops the timer: the request is answered. */
  clear(): void;
}

/**
 * A signal that aborts after `ms` as `AbortSignal.timeout` does (a `TimeoutError` DOMException), but whose timer
 * ends with the request. `AbortSignal.timeout`'s runs for the whole deadline (ten minutes by default) and holds the
 * request's signals until then: measured 2026-11-30 (tests/_request_heap_child.ts), the heap after full collections
 * grew by 615-680 bytes for each small request answered within those ten minutes, and by under 30 with this.
 */
export function startDeadline(ms: number): Deadline {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new DOMException(`the deadline of ${ms} ms passed`, "TimeoutError")), ms);
  return { signal: ctl.signal, clear: () => clearTimeout(timer) };
}

/** A request's time, split into waiting and its own work. */
export class RequestClock {
  #mark: number;
  #working = false;
  waitingMs = 0;
  workingMs = 0;
  /**
   * Whether the request has computed with no other request computing: set to WorkQueue.alone()'s probe once it
   * computes. Before that, its own work (decoding, checking) was its own anyway.
   */
  alone: () => boolean = () => true;

  constructor(readonly start = performance.now(), readonly now: () => number = () => performance.now()) {
    this.#mark = start;
  }

  /** From now on the request waits (false) or works (true). */
  phase(working: boolean): void {
    const t = this.now();
    if (this.#working) this.workingMs += t - this.#mark;
    else this.waitingMs += t - this.#mark;
    this.#mark = t;
    this.#working = working;
  }

  /**
   * The answer for a request of `layers` layers (0: not known yet) whose deadline of `deadlineMs` passed now. Where
   * it computed alongside other requests, its computing time was shared, and a retry may well fit.
   */
  deadlineError(deadlineMs: number, layers: number): ZpruneError {
    this.phase(false);
    const alone = this.alone();
    const waited = Math.round(this.waitingMs), worked = Math.round(this.workingMs);
    const what = `this request's own work (decoding, checking${layers ? `, ${layers} layer(s)` : ""})`;
    if (alone && this.workingMs >= deadlineMs / 2) {
      return new ZpruneError(
        "deadline_exceeded",
        `the server's deadline of ${deadlineMs} ms passed after ${worked} ms of ${what}, computed with no other ` +
          `request, and ${waited} ms of waiting; the same request would likely miss it again: send fewer or ` +
          "smaller layers per request",
      );
    }
    return new ZpruneError(
      "unavailable",
      `the server's deadline of ${deadlineMs} ms passed after ${waited} ms of waiting (for the body to arrive, for ` +
        `a compute slot behind other requests) and ${worked} ms of ${what}` +
        `${alone ? "" : ", computed alongside other requests"}; retry shortly`,
      { headers: { "Retry-After": "1" } },
    );
  }
}
