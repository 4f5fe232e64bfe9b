/**
 * A stand-in for gpu/worker.ts that holds the layer it is sent until the main thread posts `lose-device` (sent by
 * `WebGpuBackend.simulateDeviceLoss()`), then answers it: a test decides when the "GPU" finishes.
 */
import type { FromWorker, ToWorker } from "../protocol.ts";

const scope = self as unknown as {
  onmessage: (e: MessageEvent<ToWorker>) => void;
  postMessage(msg: FromWorker): void;
};
let held: Extract<ToWorker, { type: "prune" }> | null = null;
/** Held for this worker's life (see protocol.ts): dropped, it would tell the backend that the worker ended. */
let _lifeline: MessagePort | null = null;
scope.onmessage = (e) => {
  const msg = e.data;
  if (msg.type === "init") {
    _lifeline = msg.lifeline;
    scope.postMessage({ type: "ready", device: "held", fallback: true });
  } else if (msg.type === "prune") held = msg;
  else if (msg.type === "lose-device" && held) {
    const { rows, cols } = held.layer;
    const mask = new Uint8Array(Math.ceil((rows * cols) / 8));
    const stats = {
      pruned: 0,
      total: rows * cols,
      sparsity: 0,
      rowSparsity: { min: 0, max: 0, mean: 0 },
      nonFinite: 0 as const,
    };
    scope.postMessage({ type: "done", id: held.id, output: { mask, stats } });
    held = null;
  } else if (msg.type === "close") scope.postMessage({ type: "closed" });
};
