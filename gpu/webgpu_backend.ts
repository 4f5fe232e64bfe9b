/**
 * The WebGPU backend (`Backend` of prune/backend.ts): the main-thread side of `gpu/worker.ts`.
 *
 * Calls to `prune()` are queued here and handed to the worker one at a time (the layers of one `pruneTogether()` call
 * as one group), so when the device fails only the layer (or group) in flight is answered `unavailable`; the worker
 * is then replaced by a fresh one (new device) before the next layer, and nothing queued is lost. A watchdog bounds
 * every layer's (group's) time on the GPU, so a hung driver cannot hang a request either, and a lifeline
 * (`lifelineChannel`) tells at once of a worker that ended with no error.
 *
 * @example
 * const gpu = await createWebGpuBackend({ allowFallback: false });
 * const backend = gpu ?? createCpuBackend();
 * // ... serve; on shutdown:
 * await backend.close();
 */
import { ZpruneError } from "../contract/errors.ts";
import type { Backend, LayerJob, LayerOutput, PruneParams } from "../prune/backend.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { pinDriver, preferVulkan } from "./driver_lifetime.ts";
import { type FromWorker, layerTransfer, ownsWholeBuffer, type ToWorker } from "./protocol.ts";
import { MessageChannel as NodeMessageChannel, type MessagePort as NodeMessagePort } from "node:worker_threads";

/** Options of `createWebGpuBackend`. */
export interface WebGpuBackendOptions {
  /** Accept a software (fallback) adapter such as Mesa's lavapipe; servers want false, tests true. */
  allowFallback: boolean;
  /** Cap on the bytes of one row-tile (default: the device's storage-binding limit); tests lower it to tile. */
  maxTileBytes?: number;
  /** Treat the device's storage-binding limit as at most this (tests meet a small device's limits anywhere). */
  maxBindingBytes?: number;
  /**
   * Longest a layer, or a group of layers (given their elements together), may run on the GPU before the worker is
   * replaced; default 60 s + 1 s per 4M elements.
   */
  jobTimeoutMs?: (elements: number) => number;
  /**
   * Computes the layers the GPU cannot answer exactly (see docs/GPU.md), on this thread's side of the worker;
   * default: a CPU backend of its own, started with the first such layer and closed with this backend.
   */
  exact?: Backend;
  /**
   * Where the worker module is; default `gpu/worker.ts` beside this file. A bundled server bundles `gpu/worker.ts`
   * separately and passes its URL here (`deno compile` instead needs `--include gpu/worker.ts`).
   */
  workerUrl?: string | URL;
  /**
   * Longest close() waits for the worker to say it destroyed its device before ending its thread (default 2 s: at
   * shutdown, a worker stuck in GPU work must not hold the exit); tests that check the confirmation give it longer.
   */
  closeWaitMs?: number;
}

interface Pending {
  id: number;
  /** The `pruneTogether()` call it came with: a group's layers are queued together and posted together. */
  group: number;
  params: PruneParams;
  layer: LayerJob;
  resolve: (out: LayerOutput) => void;
  reject: (err: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** What a started worker did after it said ready and before the backend took it over, in order (see `Started`). */
type Early = { kind: "message"; msg: FromWorker } | { kind: "error"; message: string } | { kind: "exit" };

/** A started worker, its device description and its lifeline (see `ToWorker`'s init). */
interface Started {
  worker: Worker;
  device: string;
  lifeline: NodeMessagePort;
  /**
   * Messages, errors and its exit that came between "ready" and the backend's own handlers (a promise chain runs in
   * between, and Deno delivers a worker's messages between its steps): kept for the backend to act on, not lost.
   */
  early: Early[];
  /** Removes the start's listener from `lifeline`. */
  detach: () => void;
}

/** Longest a worker's start-up (adapter, device, kernel compilation) may take. */
const START_TIMEOUT_MS = 60_000;

/**
 * Fewest milliseconds between two starts `recover()` begins: each is a fresh worker (an isolate, the engine's modules,
 * an adapter request), and /healthz, which calls it, needs no token; a flood of checks would otherwise start one after
 * another without pause (about 80 a second with a stand-in worker).
 */
export const RECOVER_INTERVAL_MS = 1_000;

/**
 * A channel whose end `lifeline` the main thread keeps, and whose other end the worker holds while it runs. Deno's
 * Worker has no exit event (the web's has none: whatwg/html#5869; denoland/deno#14327 was declined for that reason),
 * and a worker that ends without an uncaught error (`self.close()`, `Deno.exit()` in it) fires none, while messages
 * posted to it are dropped without a word. Node's MessagePort emits "close" once either end is gone, which Deno's
 * node:worker_threads does when the worker's thread ends and its end with it (the web MessagePort's close event,
 * denoland/deno#21964, is not in Deno 2.9). Unref'd: it must not keep the process alive.
 */
function lifelineChannel(): { lifeline: NodeMessagePort; workerEnd: MessagePort } {
  const { port1, port2 } = new NodeMessageChannel();
  port1.start(); // the close event comes from the port's receive loop, which start() begins
  port1.unref();
  return { lifeline: port1, workerEnd: port2 as unknown as MessagePort };
}

/** Spawns a worker, opens its device; null when there is no (acceptable) adapter; throws when the device fails. */
async function startWorker(opts: WebGpuBackendOptions): Promise<Started | null> {
  const url = opts.workerUrl ?? new URL("./worker.ts", import.meta.url);
  const worker = new Worker(String(url), { type: "module", name: "zprune-webgpu" });
  const { lifeline, workerEnd } = lifelineChannel();
  const early: Early[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let exited: (() => void) | undefined;
  try {
    const reply = await new Promise<FromWorker>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<FromWorker>) => resolve(e.data);
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(e.message));
      };
      exited = () => reject(new Error("the WebGPU worker exited while it started"));
      lifeline.on("close", exited);
      timer = setTimeout(
        () => reject(new Error(`WebGPU worker did not start within ${START_TIMEOUT_MS} ms`)),
        START_TIMEOUT_MS,
      );
      const msg: ToWorker = {
        type: "init",
        opts: {
          allowFallback: opts.allowFallback,
          maxTileBytes: opts.maxTileBytes,
          maxBindingBytes: opts.maxBindingBytes,
        },
        lifeline: workerEnd,
      };
      worker.postMessage(msg, [workerEnd]);
    });
    if (reply.type === "ready") {
      // Until the backend's handlers replace these, what the worker says or does is kept, in order.
      worker.onmessage = (e: MessageEvent<FromWorker>) => void early.push({ kind: "message", msg: e.data });
      worker.onerror = (e) => {
        e.preventDefault();
        early.push({ kind: "error", message: e.message });
      };
      const onExit = () => void early.push({ kind: "exit" });
      lifeline.off("close", exited!);
      lifeline.on("close", onExit);
      return { worker, device: reply.device, lifeline, early, detach: () => lifeline.off("close", onExit) };
    }
    // A device lost while the kernels compile is a failed start, not "no adapter" (which `auto` answers silently).
    if (reply.type === "broken" || reply.type === "lost") {
      throw new ZpruneError("unavailable", `WebGPU backend failed to start: ${reply.message}`);
    }
    if (reply.type !== "none") throw new Error(`WebGPU worker answered ${reply.type} before it started`);
    lifeline.close();
    worker.terminate();
    return null;
  } catch (err) {
    lifeline.close();
    worker.terminate();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What to post for a layer without copying where possible: a view over a whole ArrayBuffer is transferred (the
 * caller's array is detached: the backend takes ownership), a SharedArrayBuffer is shared, and a view into a larger
 * buffer (such as a decoded request body that holds other layers too) is copied first.
 */
function detachable(layer: LayerJob): { layer: LayerJob; transfer: ArrayBuffer[] } {
  // Checked here, layer by layer: a detached buffer in a group's transfer list would fail the post of the whole group.
  for (const a of [layer.weight, layer.actNormSq]) {
    if (a && (a.buffer as ArrayBuffer).detached) throw new TypeError("an array's buffer is detached");
  }
  const shared = (a: ArrayBufferView) =>
    typeof SharedArrayBuffer !== "undefined" && a.buffer instanceof SharedArrayBuffer;
  const own = <T extends Uint8Array | Float32Array | Float64Array>(a: T): T =>
    shared(a) || ownsWholeBuffer(a) ? a : a.slice() as T;
  const posted = { ...layer, weight: own(layer.weight), actNormSq: layer.actNormSq ? own(layer.actNormSq) : null };
  return { layer: posted, transfer: layerTransfer(posted) };
}

/**
 * The error for a layer refused before its post: its arrays detached (an earlier call took them) is the caller's
 * mistake; anything else (a copy that could not be allocated) is the server's.
 */
function unsendable(layer: LayerJob, err: unknown): ZpruneError {
  const detached = [layer.weight, layer.actNormSq].some((a) => a && (a.buffer as ArrayBuffer).detached);
  if (detached) {
    return new ZpruneError(
      "invalid_request",
      `layer ${layer.name}: its arrays were detached, by an earlier prune() call that took ownership of them`,
    );
  }
  return unposted(layer, err);
}

/**
 * The error for a layer whose post failed. Never judged by detachment: Deno detaches the transfer list even when
 * postMessage throws, so arrays detached now were whole when `detachable` checked them.
 */
function unposted(layer: LayerJob, err: unknown): ZpruneError {
  const why = err instanceof Error ? err.message : String(err);
  return new ZpruneError("unavailable", `layer ${layer.name} could not be handed to the GPU worker: ${why}`);
}

/**
 * Opens the WebGPU backend: null when there is no adapter, or when the adapter is a fallback (software) one and
 * `allowFallback` is false; throws `ZpruneError("unavailable")` when an adapter exists but its device or kernels
 * fail. Call `close()` on shutdown to stop the worker and release the device.
 */
export async function createWebGpuBackend(opts: WebGpuBackendOptions): Promise<WebGpuBackend | null> {
  // Before the worker opens WebGPU: its instance closing must never unload the driver while the process exits.
  preferVulkan();
  await pinDriver();
  const first = await startWorker(opts);
  if (!first) return null;
  return new WebGpuBackend(first, opts);
}

/** The main-thread half of the WebGPU backend. */
export class WebGpuBackend implements Backend {
  readonly kind = "webgpu" as const;
  #device: string;
  readonly #opts: WebGpuBackendOptions;
  #worker: Worker | null = null;
  /** The current worker's lifeline (see `lifelineChannel`). */
  #lifeline: NodeMessagePort | null = null;
  /**
   * Whether the current worker has answered a layer, or is the first one (no failure came before it). A replacement
   * that fails before it is handed a layer (its device lost as it said ready) is a failed start, as one that fails
   * while it starts: the queue is answered at once rather than posted to a device that is likely gone. One that fails
   * with a layer in flight fails that layer alone, as any worker does: the layer may be what broke it, and the other
   * requests' layers queued behind it must not be answered 503 for it.
   */
  #proven = false;
  /** Why the last worker was retired, while no other has replaced it (see `unavailable`). */
  #lostWhy = "";
  /** A start in progress; it never rejects (a failure answers the queue). */
  #starting: Promise<void> | null = null;
  #queue: Pending[] = [];
  /** The layers posted to the worker and not yet answered (one call's group), in order. */
  #inFlight: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #nextId = 1;
  #nextGroup = 1;
  #closed = false;
  #exactPathLayers = 0;
  #cpu: Backend | null = null; // the exact path's, when this backend made it
  #handedBack = new Set<Pending>(); // layers computing on the exact path
  #deviceReleased = false;
  #restarts = 0;
  /** Why the last restart failed, until a worker starts (see Backend.unavailable). */
  #startFailure: string | null = null;
  /** When `recover()` last began a start (performance.now()), to space them by RECOVER_INTERVAL_MS. */
  #lastRecover = -Infinity;

  constructor(first: Started, opts: WebGpuBackendOptions) {
    this.#device = first.device;
    this.#opts = opts;
    this.#adopt(first, true);
  }

  /**
   * Prunes one layer on the GPU (queued behind earlier calls). Takes ownership of `layer.weight` and
   * `layer.actNormSq` when each spans its whole ArrayBuffer (they are transferred to the worker and detached).
   */
  prune(params: PruneParams, layer: LayerJob, signal?: AbortSignal): Promise<LayerOutput> {
    return this.pruneTogether(params, [layer], signal)[0]!;
  }

  /**
   * Prunes the layers as one group on the GPU (queued behind earlier calls; see `Backend.pruneTogether`), taking
   * ownership of their arrays as `prune()` does: their read-backs are mapped in one wait of Deno's `mapAsync` (about
   * 10 ms however many maps it covers) rather than one wait per layer. A promise per layer, in order.
   */
  pruneTogether(params: PruneParams, layers: readonly LayerJob[], signal?: AbortSignal): Promise<LayerOutput>[] {
    // Rejections, not a throw: callers chain .catch() on these as on the CPU backend's.
    if (this.#closed) {
      return layers.map(() => Promise.reject(new ZpruneError("unavailable", "the WebGPU backend is closed")));
    }
    if (signal?.aborted) return layers.map(() => Promise.reject(signal.reason));
    const group = this.#nextGroup++;
    const answers = layers.map((layer) =>
      new Promise<LayerOutput>((resolve, reject) => {
        const job: Pending = { id: this.#nextId++, group, params, layer, resolve, reject, signal };
        if (signal) {
          job.onAbort = () => {
            // Queued: dropped now. In flight (or on the exact path): answered with the abort once the GPU (or the
            // CPU) is through with it, not before: until then the layer still holds memory and the device, and the
            // caller's work queue must keep counting them.
            const i = this.#queue.indexOf(job);
            if (i < 0) return;
            this.#queue.splice(i, 1);
            reject(signal.reason);
          };
          signal.addEventListener("abort", job.onAbort, { once: true });
        }
        this.#queue.push(job);
      })
    );
    this.#pump();
    return answers;
  }

  /**
   * The description of the adapter the latest worker opened: a worker started after a failure may open another one
   * (a software adapter where the GPU it replaces is gone), and answers must name the device that computed them.
   */
  get device(): string {
    return this.#device;
  }

  /**
   * Why no layer can be computed now, null while a worker (with its device) is ready: from the moment a device or
   * worker is found lost until a fresh worker has started (the last restart's failure, while that is why), and once
   * closed. A layer that comes meanwhile waits for the restart, or is answered 503 if it fails.
   */
  get unavailable(): string | null {
    if (this.#closed) return "the WebGPU backend is closed";
    if (this.#worker) return null;
    if (this.#startFailure !== null) return this.#startFailure;
    return this.#starting
      ? `${this.#lostWhy}; a fresh worker is starting`
      : `${this.#lostWhy}; a fresh worker starts with the next layer`;
  }

  /**
   * While no worker is ready (a device lost, a restart that failed), starts one (one at a time) without waiting for a
   * layer to ask: a server a health check took out of rotation gets no layers, and must still be seen to recover. A
   * no-op otherwise, and within RECOVER_INTERVAL_MS of the last start it began.
   */
  recover(): void {
    if (this.#worker || this.#starting || this.#closed) return;
    const now = performance.now();
    if (now - this.#lastRecover < RECOVER_INTERVAL_MS) return;
    this.#lastRecover = now;
    this.#restart();
  }

  /** Destroys the current device (a real device loss) to exercise recovery; for tests only. */
  simulateDeviceLoss(): void {
    this.#worker?.postMessage({ type: "lose-device" } satisfies ToWorker);
  }

  /** Ends the current worker's thread with no error event (as `self.close()` in it would); for tests only. */
  simulateWorkerExit(): void {
    this.#worker?.postMessage({ type: "exit" } satisfies ToWorker);
  }

  /** Layers computed on the exact CPU path (float32 could not give the CPU backend's masks; too large for the GPU). */
  get exactPathLayers(): number {
    return this.#exactPathLayers;
  }

  /** Host memory the exact path's own CPU backend keeps between layers (one given in the options counts as its own). */
  get keptBytes(): number {
    return this.#cpu?.keptBytes ?? 0;
  }

  /** Whether close() saw the worker confirm that it destroyed its device (it is terminated after 2 s regardless). */
  get deviceReleased(): boolean {
    return this.#deviceReleased;
  }

  /**
   * Stops the worker and releases the device; the layer in flight, those on the exact path and those queued are
   * answered `unavailable` now.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const err = new ZpruneError("unavailable", "the WebGPU backend was closed");
    for (const j of this.#queue.splice(0)) this.#settle(j, err);
    for (const j of this.#inFlight.splice(0)) this.#settle(j, err);
    for (const j of this.#handedBack) this.#settle(j, err);
    this.#handedBack.clear();
    clearTimeout(this.#timer);
    await this.#cpu?.close();
    await this.#starting; // a worker that starts now is terminated as it comes (#restart)
    const w = this.#worker;
    const lifeline = this.#lifeline;
    this.#worker = null; // its lifeline closing (the worker ends itself below) is then no failure
    this.#lifeline = null;
    if (!w) return;
    this.#deviceReleased = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), this.#opts.closeWaitMs ?? 2000);
      w.onmessage = (e: MessageEvent<FromWorker>) => {
        if (e.data.type === "closed") {
          clearTimeout(t);
          resolve(true);
        }
      };
      w.postMessage({ type: "close" } satisfies ToWorker);
    });
    w.terminate();
    lifeline?.close();
  }

  /**
   * Makes a started worker the current one: the backend's handlers replace the start's, and what the worker did in
   * between (`Started.early`) is acted on now, in order. `proven`: see `#proven`.
   */
  #adopt(s: Started, proven: boolean): void {
    const w = s.worker;
    this.#worker = w;
    this.#lifeline = s.lifeline;
    this.#proven = proven;
    this.#device = s.device;
    this.#startFailure = null;
    w.onmessage = (e: MessageEvent<FromWorker>) => this.#onMessage(w, e.data);
    w.onerror = (e) => {
      e.preventDefault();
      this.#fail(w, `WebGPU worker crashed: ${e.message}`);
    };
    // A turn later: messages the worker posted before it ended may still be on their way, and an answer among them is
    // then delivered rather than failed. A worker the backend let go itself (retired, closed) is no news.
    const exited = () => {
      if (w === this.#worker) setTimeout(() => this.#fail(w, "WebGPU worker exited"), 0);
    };
    s.detach();
    s.lifeline.once("close", exited);
    for (const e of s.early.splice(0)) {
      if (e.kind === "message") this.#onMessage(w, e.msg);
      else if (e.kind === "error") this.#fail(w, `WebGPU worker crashed: ${e.message}`);
      else exited();
    }
  }

  #onMessage(w: Worker, msg: FromWorker): void {
    if (w !== this.#worker) return;
    if (msg.type === "lost") return this.#fail(w, `WebGPU device lost: ${msg.message}`);
    if (msg.type !== "answers") return;
    let failure: string | null = null;
    for (const a of msg.answers) {
      const i = this.#inFlight.findIndex((j) => j.id === a.id);
      if (i < 0) continue;
      const [job] = this.#inFlight.splice(i, 1);
      this.#proven = true;
      if (a.type === "done") this.#settle(job!, null, a.output);
      else if (a.type === "exact") this.#onExact(job!, a.layer, a.why);
      else {
        this.#settle(job!, new ZpruneError(a.code, a.message));
        // A device-level failure leaves the device suspect: replace the worker before the next layer.
        if (a.code === "unavailable") failure ??= a.message;
      }
    }
    if (this.#inFlight.length > 0) return; // the rest of the group is still to come (the watchdog waits for it)
    clearTimeout(this.#timer);
    if (failure !== null) this.#retire(w, failure);
    this.#pump();
  }

  /**
   * Computes a layer the worker handed back on the exact CPU path. The GPU meanwhile goes on with the next layer
   * (the caller's memory budget already counts this one).
   */
  #onExact(job: Pending, layer: LayerJob, why: string): void {
    if (job.signal?.aborted) return this.#settle(job, null); // answered with the abort
    // Every layer on the pool, small ones too: inline they would hold this thread, which serves the requests.
    const cpu = this.#opts.exact ?? (this.#cpu ??= createCpuBackend({ parallelMin: 0 }));
    this.#handedBack.add(job);
    Promise.resolve().then(() => cpu.prune(job.params, layer, job.signal)).then(
      (out) => {
        if (!this.#handedBack.delete(job)) return; // close() answered it
        this.#exactPathLayers++;
        // Slower than the GPU, so say so where operators look. The name is the client's (line breaks and quotes
        // included): quoted as JSON, so that it cannot end the line and forge another.
        console.error(
          `zprune: layer ${
            JSON.stringify(layer.name)
          } computed on the CPU path (${why}); its answer is exact, only slower`,
        );
        this.#settle(job, null, { ...out, exactPath: why });
      },
      (err) => {
        if (this.#handedBack.delete(job)) this.#settle(job, err);
      },
    );
  }

  /**
   * The worker (or its device) failed: answer the layer in flight, replace the worker, carry on with the queue; or,
   * for a replacement that failed before it was handed a layer (see `#proven`), answer the queue too. (The watchdog's
   * failure always has a layer in flight, so it never counts as a failed start.)
   */
  #fail(w: Worker, message: string): void {
    if (w !== this.#worker) return;
    clearTimeout(this.#timer);
    const jobs = this.#inFlight.splice(0);
    const failedStart = !this.#proven && jobs.length === 0;
    this.#retire(w, message);
    if (failedStart) {
      const err = new ZpruneError(
        "unavailable",
        `WebGPU backend cannot restart: its fresh worker failed before it was handed a layer: ${message}`,
      );
      return this.#failQueue(err);
    }
    for (const job of jobs) this.#settle(job, new ZpruneError("unavailable", `${message}; the backend is restarting`));
    this.#pump();
  }

  /** Drops a failed worker (and its device); the next layer, or `recover()`, starts a fresh one. */
  #retire(w: Worker, why: string): void {
    if (this.#worker === w) {
      this.#worker = null;
      this.#lostWhy = why;
      this.#lifeline?.close();
      this.#lifeline = null;
    }
    w.terminate();
    this.#restarts++;
  }

  /** Workers (each with its own device) retired after a failure. */
  get restarts(): number {
    return this.#restarts;
  }

  /**
   * Answers a call: with the abort's reason when its caller gave up meanwhile (whatever the layer's outcome: the
   * server then reports a client that left, not a GPU failure), else with `err`, else with `out`.
   */
  #settle(job: Pending, err: unknown, out?: LayerOutput): void {
    if (job.onAbort) job.signal?.removeEventListener("abort", job.onAbort);
    if (job.signal?.aborted) job.reject(job.signal.reason);
    else if (err) job.reject(err);
    else job.resolve(out!);
  }

  /**
   * Starts a worker when none is ready or starting. Once it is ready it is adopted and sent the queue's next layer in
   * the same step, so that nothing the old or the new worker says can come in between; a failed start answers the
   * queue.
   */
  #restart(): void {
    if (this.#worker || this.#starting || this.#closed) return;
    this.#starting = startWorker(this.#opts).then((s) => {
      this.#starting = null;
      if (!s) throw new Error("no WebGPU adapter is available any more");
      if (this.#closed) {
        s.worker.terminate();
        s.lifeline.close();
        return;
      }
      this.#adopt(s, false);
      this.#pump();
    }).catch((err) => {
      this.#starting = null;
      if (this.#closed) return;
      this.#failQueue(new ZpruneError("unavailable", `WebGPU backend cannot restart: ${(err as Error).message}`));
    });
  }

  /**
   * Posts `jobs` (one group) to worker `w` and arms the watchdog. A layer that cannot be posted (a buffer an earlier
   * call took, a copy that could not be allocated) is answered alone, the group goes on without it; when the post
   * itself fails, every layer is answered, and nothing is in flight.
   */
  #send(w: Worker, jobs: Pending[]): void {
    const posted: { job: Pending; layer: LayerJob }[] = [];
    const transfer = new Set<ArrayBuffer>();
    for (const job of jobs) {
      try {
        const d = detachable(job.layer);
        posted.push({ job, layer: d.layer });
        for (const b of d.transfer) transfer.add(b);
      } catch (err) {
        this.#settle(job, unsendable(job.layer, err));
      }
    }
    if (posted.length === 0) return;
    const n = posted.reduce((sum, p) => sum + p.layer.rows * p.layer.cols, 0);
    const ms = this.#opts.jobTimeoutMs?.(n) ?? 60_000 + n / 4_000;
    const layers = posted.map(({ job, layer }) => ({ id: job.id, layer }));
    try {
      w.postMessage({ type: "prune", params: posted[0]!.job.params, layers } satisfies ToWorker, [...transfer]);
    } catch (err) {
      for (const { job } of posted) this.#settle(job, unposted(job.layer, err));
      return;
    }
    // Nothing that can throw after the post: posted layers are in flight and watched.
    this.#inFlight = posted.map((p) => p.job);
    const names = posted.length === 1
      ? `layer ${posted[0]!.layer.name}`
      : `group of ${posted.length} layers (${posted[0]!.layer.name}, ...)`;
    this.#timer = setTimeout(() => this.#fail(w, `WebGPU ${names} took longer than ${ms} ms`), ms);
  }

  /**
   * Sends the next queued layer, with the layers queued after it in the same group, when none is in flight, starting
   * a worker when none is ready. Synchronous, on the worker current now: a step between choosing the worker and
   * posting to it would let a message (its device's loss) come in between, leaving the layers to a worker already
   * retired.
   */
  #pump(): void {
    while (this.#inFlight.length === 0 && !this.#closed && this.#queue.length > 0) {
      const w = this.#worker;
      if (!w) return this.#restart();
      const group = this.#queue[0]!.group;
      const jobs: Pending[] = [];
      while (this.#queue.length > 0 && this.#queue[0]!.group === group) {
        const job = this.#queue.shift()!;
        // Answered, never dropped silently: a caller may hold memory (a work-queue slot) until this call settles.
        if (job.signal?.aborted) this.#settle(job, null);
        else jobs.push(job);
      }
      if (jobs.length > 0) this.#send(w, jobs);
    }
  }

  /** No device could be opened: answers everything queued now rather than letting it wait. */
  #failQueue(err: ZpruneError): void {
    this.#startFailure = err.message;
    for (const j of this.#queue.splice(0)) this.#settle(j, err);
  }
}
