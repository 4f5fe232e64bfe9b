/**
 * Turns of the event loop for work that runs on its thread: a request computing small layers inline, or summing
 * large `inputs`, hands the loop a turn at least every so often so that other requests, /healthz and its own
 * deadline's timer still run.
 */

/**
 * Gives the event loop a turn when a request has held its thread for `ms`. Layers computed inline (small ones on
 * the CPU backend) never yield on their own; an answer from a worker or the GPU lets the loop run anyway, which a
 * zero timer armed after each turn notices, so those layers never wait here. `next()` answers a promise to await,
 * or undefined when no pause is due.
 */
export function loopTurns(ms: number): { next(): Promise<void> | undefined; stop(): void } {
  let turned = false;
  let heldSince = performance.now();
  let timer = setTimeout(() => (turned = true), 0);
  return {
    next() {
      if (turned) {
        turned = false;
        heldSince = performance.now();
        timer = setTimeout(() => (turned = true), 0);
        return undefined;
      }
      if (performance.now() - heldSince < ms) return undefined;
      return new Promise((resolve) => setTimeout(resolve, 0)); // the armed timer fires first: the next call resets
    },
    stop: () => clearTimeout(timer),
  };
}
