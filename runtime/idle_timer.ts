/** Where an `IdleTimer` schedules: the host's timers, or a test's clock that it advances by hand. */
export interface Timers {
  /** Calls `fire` after `ms`; the handle cancels it. */
  set(fire: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** The host's timers, unref'd: they never keep a process alive. */
const HOST_TIMERS: Timers = {
  set(fire, ms) {
    const t = setTimeout(fire, ms);
    // Deno's timers are numbers, unref'd through Deno.unrefTimer; Bun's and Node's are objects with unref().
    if (typeof t === "number") (globalThis as { Deno?: { unrefTimer(id: number): void } }).Deno?.unrefTimer(t);
    else (t as { unref?: () => void }).unref?.();
    return t;
  },
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * A timer that fires once nothing has touched it for `ms`: caches use it to give their memory back when the
 * server goes idle. On the host's timers it never keeps a process alive (Deno, Bun and Node alike).
 */
export class IdleTimer {
  #timer: unknown;

  constructor(readonly ms: number, readonly fire: () => void, readonly timers: Timers = HOST_TIMERS) {}

  /** Restarts the countdown. */
  touch(): void {
    this.stop();
    this.#timer = this.timers.set(() => {
      this.#timer = undefined;
      this.fire();
    }, this.ms);
  }

  /** Cancels the countdown, if any. */
  stop(): void {
    if (this.#timer !== undefined) this.timers.clear(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * A full garbage collection where the runtime allows one: Bun always, Deno when started with
 * `--v8-flags=--expose-gc` (as `deno task serve` and the container are). Dropped buffers of an idle process are
 * otherwise returned only when it next allocates: with no work, V8 has no reason to collect them.
 */
export function collectGarbage(): void {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (g.Bun) g.Bun.gc(true);
  else g.gc?.();
}
