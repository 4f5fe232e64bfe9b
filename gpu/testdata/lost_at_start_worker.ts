/** A stand-in for gpu/worker.ts whose device is lost while it starts: it answers `init` with `lost`. */
import type { FromWorker } from "../protocol.ts";

const scope = self as unknown as { onmessage: () => void; postMessage(msg: FromWorker): void };
scope.onmessage = () => scope.postMessage({ type: "lost", message: "lost in warm-up" });
