/** Messages between `webgpu_backend.ts` (main thread) and `worker.ts` (the thread that owns the GPU device). */
import type { ErrorCode } from "../contract/errors.ts";
import type { LayerJob, LayerOutput, PruneParams } from "../prune/backend.ts";
import type { EngineOptions } from "./engine.ts";

/** Main thread to worker. */
export type ToWorker =
  /**
   * `lifeline` is one end of a channel whose other end the main thread watches: the worker holds it for as long as it
   * runs, so that its thread ending (`self.close()`, an uncaught error) closes the channel, which Deno's Worker, having
   * no exit event, would not tell.
   */
  | { type: "init"; opts: EngineOptions; lifeline: MessagePort }
  /**
   * Layers of one request, computed together (their read-backs mapped in one await: `GpuEngine.pruneGroup`) and
   * answered together, in one `answers`.
   */
  | { type: "prune"; params: PruneParams; layers: { id: number; layer: LayerJob }[] }
  | { type: "close" }
  /** Destroys the device now (a real device loss, for tests of the recovery path). */
  | { type: "lose-device" }
  /** Ends the worker's thread now, with no error and no answer (as `self.close()` would), for tests. */
  | { type: "exit" };

/** Worker to main thread. */
export type FromWorker =
  | { type: "ready"; device: string; fallback: boolean }
  | { type: "none" }
  | { type: "broken"; message: string }
  /** An answer for every layer of a `prune` message. */
  | { type: "answers"; answers: Answer[] }
  | { type: "lost"; message: string }
  | { type: "closed" };

/** The worker's answer for one layer. */
export type Answer =
  | { type: "done"; id: number; output: LayerOutput }
  | { type: "fail"; id: number; code: ErrorCode; message: string }
  /** The layer needs the exact CPU path (`why`): it comes back, to be computed on the main thread's CPU backend. */
  | { type: "exact"; id: number; why: string; layer: LayerJob };

/** The ArrayBuffers the answers own outright (outputs, and layers handed back), each once. */
export function answersTransfer(answers: Answer[]): ArrayBuffer[] {
  const list = new Set<ArrayBuffer>();
  for (const a of answers) {
    const own = a.type === "done" ? outputTransfer(a.output) : a.type === "exact" ? layerTransfer(a.layer) : [];
    for (const b of own) list.add(b);
  }
  return [...list];
}

/** The ArrayBuffers a layer output owns outright, to transfer rather than copy. */
export function outputTransfer(out: LayerOutput): ArrayBuffer[] {
  return owned([out.mask, out.weight, out.score]);
}

/** The ArrayBuffers a layer job's arrays own outright (a shared buffer is shared, not transferred). */
export function layerTransfer(layer: LayerJob): ArrayBuffer[] {
  return owned([layer.weight, layer.actNormSq]);
}

/** Whether `a` views the whole of an ArrayBuffer (not a SharedArrayBuffer): one that can be transferred as it is. */
export function ownsWholeBuffer(a: ArrayBufferView): a is ArrayBufferView<ArrayBuffer> {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer;
}

function owned(arrays: (ArrayBufferView | null | undefined)[]): ArrayBuffer[] {
  const list: ArrayBuffer[] = [];
  for (const a of arrays) {
    if (a && ownsWholeBuffer(a) && !list.includes(a.buffer)) list.push(a.buffer);
  }
  return list;
}
