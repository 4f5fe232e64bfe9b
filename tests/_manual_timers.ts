/**
 * A clock for tests of idle timers: time moves only when the test says, so a loaded machine cannot fire a countdown
 * early or late. `IdleTimer`, `ScratchBuffers` and `BufferPool` take it in place of the host's timers; modules that
 * read the global setTimeout at each call (drain.ts, host.ts) are put on it by `onManualClock`.
 */
import type { Timers } from "../runtime/idle_timer.ts";

/** Timers on a clock that `advance(ms)` moves, firing what falls due in order. */
export class ManualTimers implements Timers {
  #now = 0;
  #next = 0;
  #due = new Map<number, { at: number; fire: () => void }>();

  /** Milliseconds advanced so far. */
  get now(): number {
    return this.#now;
  }

  /** Timers set and not yet fired or cleared. */
  get pending(): number {
    return this.#due.size;
  }

  set(fire: () => void, ms: number): number {
    const id = this.#next++;
    // As setTimeout: a negative, NaN or 0 delay is the least one. (1 here: a timer that sets itself again at once
    // would otherwise fire forever within one advance.)
    this.#due.set(id, { at: this.#now + (ms >= 1 ? ms : 1), fire });
    return id;
  }

  clear(handle: unknown): void {
    this.#due.delete(handle as number);
  }

  /** Moves the clock `ms` on, firing each timer due by then at its own time, earliest first (set order on ties). */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let first: [number, { at: number; fire: () => void }] | undefined;
      for (const e of this.#due) if (e[1].at <= end && (!first || e[1].at < first[1].at)) first = e;
      if (!first) break;
      this.#due.delete(first[0]);
      this.#now = first[1].at;
      first[1].fire();
    }
    this.#now = end;
  }
}

/**
 * Runs `fn` with the global setTimeout and clearTimeout on a clock the test moves: timers of code that reads them at
 * each call then fire exactly when the test says, however loaded the machine.
 */
export async function onManualClock(fn: (clock: ManualTimers) => Promise<void>): Promise<void> {
  const clock = new ManualTimers();
  const saved = { set: globalThis.setTimeout, clear: globalThis.clearTimeout };
  globalThis.setTimeout = ((f: () => void, ms?: number) => clock.set(f, ms ?? 0)) as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((h?: number) => clock.clear(h)) as unknown as typeof clearTimeout;
  try {
    await fn(clock);
  } finally {
    globalThis.setTimeout = saved.set;
    globalThis.clearTimeout = saved.clear;
  }
}

/** Lets pending promise callbacks run, without timers (the clock may be a manual one). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
}
