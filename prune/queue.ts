/**
 * The bounded work queue in front of the backend: at most `concurrency` requests compute at once, at most
 * `maxQueue` wait; past that a request is refused at once with 429 `busy` and a Retry-After, instead of
 * piling up memory. A request whose client went away leaves the queue without running.
 */
import { ZpruneError } from "../contract/errors.ts";

/** A bounded FIFO work queue with a fixed number of running slots. */
export class WorkQueue {
  #running = 0;
  #waiting: Array<() => void> = [];

  constructor(readonly concurrency: number, readonly maxQueue: number, readonly retryAfterSeconds = 1) {}

  /** Requests waiting for a slot. */
  get depth(): number {
    return this.#waiting.length;
  }

  /** Requests computing now. */
  get running(): number {
    return this.#running;
  }

  /** Runs `fn` when a slot is free; throws `busy` when the queue is full, or the signal's reason if aborted. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    if (this.#running < this.concurrency) {
      this.#running++;
    } else {
      if (this.#waiting.length >= this.maxQueue) {
        throw new ZpruneError("busy", `the work queue is full (${this.maxQueue} waiting); retry later`, {
          headers: { "Retry-After": String(this.retryAfterSeconds) },
        });
      }
      await new Promise<void>((resolve, reject) => {
        const go = () => {
          signal?.removeEventListener("abort", drop);
          resolve();
        };
        const drop = () => {
          const i = this.#waiting.indexOf(go);
          if (i >= 0) this.#waiting.splice(i, 1);
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", drop, { once: true });
        this.#waiting.push(go);
      });
      // The finishing request handed its slot over: #running already counts this one.
    }
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }

  /** Resolves when nothing is running or waiting (graceful shutdown). */
  async drained(pollMs = 20): Promise<void> {
    while (this.#running > 0 || this.#waiting.length > 0) await new Promise((r) => setTimeout(r, pollMs));
  }
}
