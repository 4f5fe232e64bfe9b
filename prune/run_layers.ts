/**
 * A request's layers computed on a backend one after another: each may use the whole machine, and memory stays one
 * layer deep. The route times and counts this; the queue decides when it starts.
 */
import type { Backend, LayerJob, LayerOutput, PruneParams } from "./backend.ts";
import { loopTurns } from "./loop_turns.ts";
import { untilAborted } from "./queue.ts";

/**
 * Each layer's output, in order. Stops with the signal's reason once it aborts (a client gone, a deadline), leaving a
 * layer in flight to `keep` (WorkQueue.run's); hands the event loop a turn at least every `yieldMs`.
 */
export async function runLayers(
  backend: Backend,
  params: PruneParams,
  layers: readonly LayerJob[],
  signal: AbortSignal,
  keep: (work: Promise<unknown>) => void,
  yieldMs: number,
): Promise<LayerOutput[]> {
  const outs: LayerOutput[] = [];
  const turns = loopTurns(yieldMs);
  try {
    for (const layer of layers) {
      // Awaiting a layer computed inline yields only to microtasks: a request of many small layers lets other
      // requests, /healthz and its own deadline's timer run at least every yieldMs.
      const pause = turns.next();
      if (pause) await pause;
      signal.throwIfAborted();
      outs.push(await untilAborted(backend.prune(params, layer, signal), signal, keep));
    }
  } finally {
    turns.stop();
  }
  return outs;
}
