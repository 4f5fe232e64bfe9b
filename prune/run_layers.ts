/**
 * A request's layers computed on a backend one after another: each may use the whole machine, and memory stays about
 * one layer deep. On a backend that computes layers together (`Backend.pruneTogether`), small consecutive layers go
 * as groups (`layerGroups`). The route times and counts this; the queue decides when it starts.
 */
import { layerScratchBytes } from "../contract/working_memory.ts";
import type { Backend, LayerJob, LayerOutput, PruneParams } from "./backend.ts";
import { loopTurns } from "./loop_turns.ts";
import { untilAborted } from "./queue.ts";

/**
 * Scratch a group may hold beyond the request's largest layer's, which the working-memory estimate counts
 * (contract/working_memory.ts): small enough to leave the estimate as it is, large enough that small layers group.
 */
export const GROUP_SLACK_BYTES = 2 ** 20;
/** Most layers in one group: bounds one message to the GPU worker, and how long a group's first answer waits. */
export const GROUP_MAX_LAYERS = 256;

/**
 * The layers cut into consecutive groups, as [start, end) index pairs: a group takes the next layer while their
 * scratch (`layerScratchBytes`) adds up to at most the largest layer's plus GROUP_SLACK_BYTES, and while it has fewer
 * than GROUP_MAX_LAYERS; else the next group starts with that layer.
 */
export function layerGroups(layers: readonly LayerJob[], params: PruneParams): [number, number][] {
  const scratch = layers.map((l) => layerScratchBytes(l, params.method));
  const budget = scratch.reduce((most, bytes) => Math.max(most, bytes), 0) + GROUP_SLACK_BYTES;
  const groups: [number, number][] = [];
  let start = 0, sum = 0;
  for (const [i, bytes] of scratch.entries()) {
    if (i > start && (sum + bytes > budget || i - start === GROUP_MAX_LAYERS)) {
      groups.push([start, i]);
      start = i;
      sum = 0;
    }
    sum += bytes;
  }
  if (layers.length > 0) groups.push([start, layers.length]);
  return groups;
}

/**
 * Each layer's output, in order. Stops with the signal's reason once it aborts (a client gone, a deadline), leaving a
 * layer (or group) in flight to `keep` (WorkQueue.run's); hands the event loop a turn at least every `yieldMs`. The
 * first layer that fails, in order, fails the call; within a group, every layer is answered first, so that nothing the
 * request started is still computing once it has been answered.
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
  const groups = backend.pruneTogether
    ? layerGroups(layers, params)
    : layers.map((_, i): [number, number] => [i, i + 1]);
  try {
    for (const [start, end] of groups) {
      // Awaiting a layer computed inline yields only to microtasks: a request of many small layers lets other
      // requests, /healthz and its own deadline's timer run at least every yieldMs.
      const pause = turns.next();
      if (pause) await pause;
      signal.throwIfAborted();
      if (end - start === 1) {
        outs.push(await untilAborted(backend.prune(params, layers[start]!, signal), signal, keep));
        continue;
      }
      const answers = backend.pruneTogether!(params, layers.slice(start, end), signal);
      for (const a of await untilAborted(Promise.allSettled(answers), signal, keep)) {
        if (a.status === "rejected") throw a.reason;
        outs.push(a.value);
      }
    }
  } finally {
    turns.stop();
  }
  return outs;
}
