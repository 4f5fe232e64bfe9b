/**
 * A stand-in for gpu/worker.ts that holds the layers it is sent until the main thread posts `lose-device` (sent by
 * `WebGpuBackend.simulateDeviceLoss()`), then answers them: a test decides when the "GPU" finishes.
 */
import type { FromWorker, ToWorker } from "../protocol.ts";
import { emptyAnswers } from "./empty_answers.ts";

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
    scope.postMessage(emptyAnswers(held));
    held = null;
  } else if (msg.type === "close") scope.postMessage({ type: "closed" });
};
