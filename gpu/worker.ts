/**
 * The GPU thread: owns one `GpuEngine` and runs the jobs the main thread sends, one at a time, in arrival order.
 * Deno's `mapAsync` blocks its thread's event loop while the GPU works, so this keeps the server responsive.
 * A device loss is reported (`lost`) so the main thread can replace this worker.
 */
import { isErrorCode } from "../contract/errors.ts";
import { ExactPathNeeded, GpuEngine } from "./engine.ts";
import type { LayerJob, LayerOutput } from "../prune/backend.ts";
import { type Answer, answersTransfer, type FromWorker, type ToWorker } from "./protocol.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
  postMessage(msg: FromWorker, transfer?: Transferable[]): void;
  close(): void;
}
const scope = self as unknown as WorkerScope;

let engine: GpuEngine | null = null;
/**
 * The main thread's lifeline (see protocol.ts), held here for the thread's life: dropped (garbage-collected), it would
 * close as if this thread had ended.
 */
let lifeline: MessagePort | null = null;
/** Jobs run strictly one after another: each waits for the previous one's promise. */
let queue: Promise<void> = Promise.resolve();

function post(msg: FromWorker, transfer: Transferable[] = []): void {
  scope.postMessage(msg, transfer);
}

async function init(msg: Extract<ToWorker, { type: "init" }>): Promise<void> {
  try {
    engine = await GpuEngine.create(msg.opts);
    if (!engine) return post({ type: "none" });
    const e = engine;
    // A layer the GPU cannot answer exactly goes back to the main thread, whose CPU backend has every core; this
    // thread has one.
    e.exactElsewhere = true;
    e.device.lost.then(() => post({ type: "lost", message: e.lost ?? "device lost" }));
    await e.warm();
    post({ type: "ready", device: e.description, fallback: e.isFallback });
  } catch (err) {
    // An adapter exists but the device or a kernel failed: that is an error, not "no GPU here".
    post({ type: "broken", message: err instanceof Error ? err.message : String(err) });
  }
}

async function prune(msg: Extract<ToWorker, { type: "prune" }>): Promise<void> {
  let results: (LayerOutput | Error)[];
  try {
    if (!engine) throw new Error("WebGPU engine not initialised");
    results = await engine.pruneGroup(msg.params, msg.layers.map((l) => l.layer));
  } catch (err) {
    results = msg.layers.map(() => err instanceof Error ? err : new Error(String(err)));
  }
  const answers = msg.layers.map(({ id, layer }, i) => answer(id, layer, results[i]!));
  post({ type: "answers", answers }, answersTransfer(answers));
}

/** A layer's answer from its output or error: the exact path, the error's code (else `unavailable`), or the output. */
function answer(id: number, layer: LayerJob, result: LayerOutput | Error): Answer {
  if (!(result instanceof Error)) return { type: "done", id, output: result };
  if (result instanceof ExactPathNeeded) return { type: "exact", id, why: result.why, layer };
  const code = (result as { code?: unknown }).code;
  return { type: "fail", id, code: isErrorCode(code) ? code : "unavailable", message: result.message };
}

scope.onmessage = (e) => {
  const msg = e.data;
  if (msg.type === "init") {
    lifeline = msg.lifeline;
    queue = queue.then(() => init(msg));
  } else if (msg.type === "prune") queue = queue.then(() => prune(msg));
  else if (msg.type === "lose-device") engine?.device.destroy(); // not queued: it must hit the job in flight
  else if (msg.type === "exit") scope.close(); // not queued either
  else if (msg.type === "close") {
    queue = queue.then(() => {
      engine?.destroy();
      engine = null;
      post({ type: "closed" });
      lifeline?.close();
      scope.close();
    });
  }
};
