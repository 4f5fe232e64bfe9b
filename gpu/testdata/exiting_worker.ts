/**
 * A stand-in for gpu/worker.ts that ends its own thread, with no error and no answer, as `self.close()` does: at
 * `init` when its URL ends in `?at-start`, else at a layer whose name starts with "exit". Other layers are answered (an
 * empty mask).
 */
import type { FromWorker, ToWorker } from "../protocol.ts";

const scope = self as unknown as {
  onmessage: (e: MessageEvent<ToWorker>) => void;
  postMessage(msg: FromWorker): void;
  close(): void;
};
/** Held for this worker's life (see protocol.ts): dropped, it would tell the backend that the worker ended. */
let _lifeline: MessagePort | null = null;
scope.onmessage = (e) => {
  const msg = e.data;
  if (msg.type === "init") {
    if (import.meta.url.endsWith("?at-start")) return scope.close();
    _lifeline = msg.lifeline;
    scope.postMessage({ type: "ready", device: "exiting", fallback: true });
  } else if (msg.type === "prune") {
    if (msg.layer.name.startsWith("exit")) return scope.close();
    const { rows, cols } = msg.layer;
    const n = rows * cols;
    const stats = { pruned: 0, total: n, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 as const };
    scope.postMessage({ type: "done", id: msg.id, output: { mask: new Uint8Array(Math.ceil(n / 8)), stats } });
  } else if (msg.type === "close") scope.postMessage({ type: "closed" });
};
