/** A stand-in for gpu/worker.ts whose device is lost while it starts: it answers `init` with `lost`. */
import type { FromWorker } from "../protocol.ts";

(self as unknown as { onmessage: () => void; postMessage(msg: FromWorker): void }).onmessage = () => {
  (self as unknown as { postMessage(msg: FromWorker): void }).postMessage({ type: "lost", message: "lost in warm-up" });
};
