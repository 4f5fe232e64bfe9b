/**
 * A stand-in for gpu/worker.ts that ends its own thread, with no error and no answer, as `self.close()` does: at
 * `init` when its URL ends in `?at-start`, else at a group with a layer whose name starts with "exit". Other layers
 * are answered (an empty mask).
 */
import type { FromWorker, ToWorker } from "../protocol.ts";
import { emptyAnswers } from "./empty_answers.ts";

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
    if (msg.layers.some((l) => l.layer.name.startsWith("exit"))) return scope.close();
    scope.postMessage(emptyAnswers(msg));
  } else if (msg.type === "close") scope.postMessage({ type: "closed" });
};
