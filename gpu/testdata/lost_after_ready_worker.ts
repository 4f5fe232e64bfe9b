/**
 * A stand-in for gpu/worker.ts whose device is lost right after it starts: it answers `init` with `ready` and at once
 * with `lost` (unless its URL ends in `?stays`). A layer that reaches it is answered (an empty mask), and so is
 * `lose-device` (with `lost`). Each start names another device.
 */
import type { FromWorker, ToWorker } from "../protocol.ts";
import { emptyAnswers } from "./empty_answers.ts";

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
  } else if (msg.type === "prune") scope.postMessage(emptyAnswers(msg));
  else if (msg.type === "lose-device") scope.postMessage({ type: "lost", message: "lost on request" });
  else if (msg.type === "close") scope.postMessage({ type: "closed" });
};
