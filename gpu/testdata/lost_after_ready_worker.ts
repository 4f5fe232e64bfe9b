/**
 * A stand-in for gpu/worker.ts whose device is lost right after it starts: it answers `init` with `ready` and at once
 * with `lost` (unless its URL ends in `?stays`). A layer that reaches it is answered (an empty mask), and so is
 * `lose-device` (with `lost`). Each start names another device.
 */
import type { FromWorker, ToWorker } from "../protocol.ts";

const scope = self as unknown as {
  onmessage: (e: MessageEvent<ToWorker>) => void;
  postMessage(msg: FromWorker): void;
};
/** Held for this worker's life (see protocol.ts): dropped, it would tell the backend that the worker ended. */
let _lifeline: MessagePort | null = null;
scope.onmessage = (e) => {
  const msg = e.data;
  if (msg.type === "init") {
    _lifeline = msg.lifeline;
    scope.postMessage({ type: "ready", device: `stand-in ${crypto.randomUUID()}`, fallback: true });
    if (!import.meta.url.endsWith("?stays")) scope.postMessage({ type: "lost", message: "lost right after start" });
  } else if (msg.type === "prune") {
    const { rows, cols } = msg.layer;
    const n = rows * cols;
    const stats = { pruned: 0, total: n, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 as const };
    scope.postMessage({ type: "done", id: msg.id, output: { mask: new Uint8Array(Math.ceil(n / 8)), stats } });
  } else if (msg.type === "lose-device") scope.postMessage({ type: "lost", message: "lost on request" });
  else if (msg.type === "close") scope.postMessage({ type: "closed" });
};
