/**
 * A timer that fires once nothing has touched it for `ms`: caches use it to give their memory back when the
 * server goes idle. It never keeps a process alive (an unref'd timer on Deno, Bun and Node alike).
 */
export class IdleTimer {
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly ms: number, readonly fire: () => void) {}

  /** Restarts the countdown. */
  touch(): void {
    this.stop();
    const t = setTimeout(() => {
      this.#timer = undefined;
      this.fire();
    }, this.ms);
    // Deno's timers are numbers, unref'd through Deno.unrefTimer; Bun's and Node's are objects with unref().
    if (typeof t === "number") (globalThis as { Deno?: { unrefTimer(id: number): void } }).Deno?.unrefTimer(t);
    else (t as { unref?: () => void }).unref?.();
    this.#timer = t;
  }

  /** Cancels the countdown, if any. */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
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
