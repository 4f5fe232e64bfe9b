/**
 * The bounded work queue in front of the backend. A request runs when a compute slot is free and its memory
 * estimate fits the budget beside the requests already running; otherwise it waits, first come first served.
 * At most `maxQueue` wait: past that a request is refused at once with 429 `busy` and a Retry-After, instead of
 * piling up memory. A request whose client went away (its signal aborts) leaves the queue without running. One that
 * gives up while work it started is still running (a layer on the GPU) is answered at once but `keep`s that work:
 * its slot and memory stay counted until the work has stopped.
 */
import { ZpruneError } from "../contract/errors.ts";

/** Options of a WorkQueue. */
export interface WorkQueueOptions {
  /** Requests computing at once. */
  concurrency: number;
  /** Requests allowed to wait beyond those. */
  maxQueue: number;
  /** Bytes that running requests may hold together (their estimates); Infinity for no budget. */
  memoryBudget?: number;
}

interface Waiter {
  cost: number;
  go: () => void;
}

/** A bounded FIFO work queue with compute slots and a memory budget. */
export class WorkQueue {
  readonly concurrency: number;
  readonly maxQueue: number;
  readonly memoryBudget: number;
  /** Seconds a refused client is told to wait. */
  readonly retryAfterSeconds = 1;
  #running = 0;
  #bytes = 0;
  #waiting: Waiter[] = [];
  /** Requests that started computing while another was: see `alone()`. */
  #crowdedStarts = 0;
  /** Requests that started computing: see `idle()`. */
  #starts = 0;

  constructor(options: WorkQueueOptions) {
    this.concurrency = Math.max(1, options.concurrency);
    this.maxQueue = Math.max(0, options.maxQueue);
    this.memoryBudget = options.memoryBudget ?? Infinity;
  }

  /** Requests waiting for a slot. */
  get depth(): number {
    return this.#waiting.length;
  }

  /** Requests computing now. */
  get running(): number {
    return this.#running;
  }

  /**
   * For a request that starts computing now: a probe that later tells whether it has computed alone all along (no
   * other request computing when it started, none started since), so that its time was its own work's.
   */
  alone(): () => boolean {
    const solo = this.#running <= 1, at = this.#crowdedStarts;
    return () => solo && this.#crowdedStarts === at;
  }

  /**
   * For a request doing its own work before it computes (decoding and checking its body): a probe that later tells
   * whether no request has computed meanwhile (none computing now, work a request left behind included; none started
   * since). Read it before the request itself starts computing, which would count as a start.
   */
  idle(): () => boolean {
    const quiet = this.#running === 0, at = this.#starts;
    return () => quiet && this.#starts === at;
  }

  /** Counts a request starting to compute. */
  #start(cost: number): void {
    this.#starts++;
    this.#running++;
    this.#bytes += cost;
    if (this.#running > 1) this.#crowdedStarts++;
  }

  /** Bytes the running requests are estimated to hold. */
  get bytesInUse(): number {
    return this.#bytes;
  }

  /** A request may start when a slot is free and it fits the budget (a lone request always may). */
  #fits(cost: number): boolean {
    return this.#running < this.concurrency && (this.#running === 0 || this.#bytes + cost <= this.memoryBudget);
  }

  /** Starts waiters from the head of the line while they fit; FIFO, so a big one is not overtaken forever. */
  #wake(): void {
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0]!.cost)) {
      const w = this.#waiting.shift()!;
      this.#start(w.cost);
      w.go();
    }
  }

  /**
   * Runs `fn` once admitted. `cost` is the request's memory estimate in bytes. Throws `busy` when the queue is
   * full, `too_large` when the cost alone exceeds the budget, or the signal's reason if it aborts first. Work that
   * `fn` passes to `keep` keeps the request counted after `fn` ends, until that work settles.
   */
  async run<T>(
    fn: (keep: (work: Promise<unknown>) => void) => Promise<T>,
    signal?: AbortSignal,
    cost = 0,
  ): Promise<T> {
    signal?.throwIfAborted();
    if (cost > this.memoryBudget) {
      throw new ZpruneError(
        "too_large",
        `the request needs about ${cost} bytes of working memory, over this server's budget of ${this.memoryBudget}; ` +
          "send fewer or smaller layers per request",
      );
    }
    if (this.#waiting.length === 0 && this.#fits(cost)) {
      this.#start(cost);
    } else {
      if (this.#waiting.length >= this.maxQueue) {
        throw new ZpruneError("busy", `the work queue is full (${this.maxQueue} waiting); retry later`, {
          headers: { "Retry-After": String(this.retryAfterSeconds) },
        });
      }
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          cost,
          go: () => {
            signal?.removeEventListener("abort", drop);
            resolve();
          },
        };
        const drop = () => {
          const i = this.#waiting.indexOf(waiter);
          if (i >= 0) this.#waiting.splice(i, 1);
          this.#wake(); // the head may have been what blocked the others
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", drop, { once: true });
        this.#waiting.push(waiter);
      });
      // #wake counted this request in #running and #bytes when it let it go.
    }
    const held: Promise<unknown>[] = [];
    try {
      return await fn((work) => void held.push(work));
    } finally {
      const release = () => {
        this.#running--;
        this.#bytes -= cost;
        this.#wake();
      };
      if (held.length === 0) release();
      else void Promise.allSettled(held).then(release);
    }
  }
}

/**
 * `work`'s answer, or the signal's reason as soon as it aborts: a request past its deadline, or whose client left, is
 * answered then, not when the backend gets through the layer in flight (a whole layer on the GPU). The backend's
 * promise settles only once that layer's memory and device are free again, so the request `keep`s it in the work
 * queue meanwhile (see `WorkQueue.run`).
 */
export function untilAborted<T>(
  work: Promise<T>,
  signal: AbortSignal,
  keep: (work: Promise<unknown>) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      keep(work);
      reject(signal.reason);
    };
    // Handled either way: a rejection after the abort is that abort, answered already.
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Whether `e` is the reason `AbortSignal.timeout` aborts with: a request's deadline passed. */
export function isDeadline(e: unknown): boolean {
  return e instanceof DOMException && e.name === "TimeoutError";
}
