/**
 * The CPU backend: exact, and the production path on hosts without a GPU. Small layers run on the calling
 * thread (a few milliseconds, cheaper than a round trip to a worker); large ones are split by rows across a
 * pool of workers, one per core, sharing the tensors through SharedArrayBuffers.
 */
import { cpus } from "node:os";
import { cpuLimit, memoryLimitBytes } from "../runtime/host_limits.ts";
import { collectGarbage, IdleTimer } from "../runtime/idle_timer.ts";
import type { Backend, LayerJob, LayerOutput, PruneParams } from "./backend.ts";
import { CpuPool } from "./cpu_pool.ts";
import { type Executor, pruneLayer, pruneLayerWith } from "./prune_layer.ts";

/** Options of `createCpuBackend`. */
export interface CpuBackendOptions {
  /** Worker threads (default: one per core this process may use; 0 runs everything on the calling thread). */
  threads?: number;
  /** Layers with fewer elements run on the calling thread (default 2^18). */
  parallelMin?: number;
  /** Scratch memory kept between layers for reuse (default: an eighth of the host's memory, at most 2 GiB). */
  scratchBytes?: number;
}

/** The CPU's model name, as `/v1/info` and every response report it. */
export function cpuDescription(): string {
  const list = cpus();
  const model = list[0]?.model?.trim() || "unknown CPU";
  return `${model} (${list.length} cores)`;
}

/**
 * A free list of SharedArrayBuffers by size. First touches of fresh memory cost about 2.3 µs a page here (about
 * 40 ms for the 64 MiB of a 4096x4096 layer's scores), and an LLM's layers come in a handful of sizes, so buffers
 * are kept for the next layer: at most `maxBytes` in all, the least recently used going first when a new one needs
 * the room, and none once nothing has taken or given one for `idleMs`. A layer gets the smallest kept buffer of at
 * least its size and at most twice it (callers view their length of it), so a request whose layers come in several
 * sizes keeps at most about a third more than its largest layer's scratch, not one set per size (measured in an
 * audit: 672 MiB beyond the largest for f32 layers of 64M, 32M, 16M and 8M elements); and a small layer never
 * takes, and so never makes another request allocate again, a buffer far larger than it needs.
 */
export class ScratchBuffers {
  #free = new Map<number, SharedArrayBuffer[]>();
  /** Kept buffers, least recently given first. */
  #order: SharedArrayBuffer[] = [];
  #kept = 0;
  /** Layers computing now: the idle timer lets the buffers go only when there are none. */
  #active = 0;
  readonly #idle: IdleTimer;

  constructor(readonly maxBytes: number, idleMs = SCRATCH_IDLE_MS) {
    this.#idle = new IdleTimer(idleMs, () => {
      if (this.#active > 0) return this.#idle.touch(); // a layer longer than idleMs: not idle
      this.clear();
      collectGarbage();
    });
  }

  /** Runs `layer`, a layer's computation: the buffers are not idle meanwhile, however long it takes. */
  async during<T>(layer: () => Promise<T>): Promise<T> {
    this.#active++;
    try {
      return await layer();
    } finally {
      this.#active--;
      this.#idle.touch();
    }
  }

  /** A buffer of at least `bytes` and at most twice that (contents undefined). */
  take(bytes: number): SharedArrayBuffer {
    this.#idle.touch();
    let best = 0;
    for (const size of this.#free.keys()) {
      if (size >= bytes && size <= 2 * bytes && (best === 0 || size < best)) best = size;
    }
    if (best === 0) return new SharedArrayBuffer(bytes);
    const list = this.#free.get(best)!;
    const b = list.pop()!;
    if (list.length === 0) this.#free.delete(best);
    this.#order.splice(this.#order.lastIndexOf(b), 1);
    this.#kept -= best;
    return b;
  }

  /** Keeps `b` for reuse, making room by dropping the least recently given ones. */
  give(b: ArrayBufferLike): void {
    this.#idle.touch();
    if (!(b instanceof SharedArrayBuffer) || b.byteLength > this.maxBytes) return;
    while (this.#kept + b.byteLength > this.maxBytes) {
      const old = this.#order.shift()!;
      const list = this.#free.get(old.byteLength)!;
      list.splice(list.indexOf(old), 1);
      if (list.length === 0) this.#free.delete(old.byteLength);
      this.#kept -= old.byteLength;
    }
    const list = this.#free.get(b.byteLength) ?? [];
    list.push(b);
    this.#free.set(b.byteLength, list);
    this.#order.push(b);
    this.#kept += b.byteLength;
  }

  /** Drops every kept buffer (for the garbage collector to return). */
  clear(): void {
    this.#idle.stop();
    this.#free.clear();
    this.#order = [];
    this.#kept = 0;
  }

  /** Bytes kept for reuse. */
  get keptBytes(): number {
    return this.#kept;
  }

  /** Sizes of the kept buffers, least recently given first (for tests). */
  get keptSizes(): number[] {
    return this.#order.map((b) => b.byteLength);
  }
}

/** How long kept scratch buffers outlive the last layer that used them: an idle server gives the memory back. */
export const SCRATCH_IDLE_MS = 30_000;

/** Default scratch kept between layers: an eighth of the host's memory (or its container's), at most 2 GiB. */
function defaultScratchBytes(): number {
  return Math.min(2 * 1024 ** 3, Math.floor(memoryLimitBytes() / 8));
}

/** A worker-pool executor of `threads` workers (the CPU backend's own, and benchmarks'); close it when done. */
export function createPoolExecutor(
  threads: number,
  scratchBytes = defaultScratchBytes(),
): Executor & {
  close(): void;
  crash(index: number): void;
  restarts(): number;
  /** Runs a layer's computation, during which the kept buffers are not idle. */
  during<T>(layer: () => Promise<T>): Promise<T>;
} {
  const pool = new CpuPool(threads);
  const buffers = new ScratchBuffers(scratchBytes);
  return {
    shared: true,
    threads: pool.size,
    all: (count, make) => pool.all(count, make),
    scratch: (bytes) => buffers.take(bytes),
    release: (b) => buffers.give(b),
    during: (layer) => buffers.during(layer),
    close: () => {
      pool.close();
      buffers.clear();
    },
    crash: (index) => pool.crash(index),
    restarts: () => pool.restarts,
  };
}

/** The CPU backend, with a fault drill for tests of the 503 path. */
export interface CpuBackend extends Backend {
  /** Fault drill: one worker dies when next handed work; that request fails with `unavailable`, later ones succeed. */
  crashWorker(index?: number): void;
}

/** Creates the CPU backend. */
export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  const threads = options.threads ?? cpuLimit();
  const parallelMin = options.parallelMin ?? 1 << 18;
  let exec: ReturnType<typeof createPoolExecutor> | null = null;
  // Workers start with the first large layer: a server that only sees small ones never spawns them.
  const executor = () => (exec ??= createPoolExecutor(threads, options.scratchBytes));
  let closedRestarts = 0; // restarts of pools already closed, so the count never goes down

  return {
    kind: "cpu",
    device: cpuDescription(),
    exactPathLayers: 0,
    prune(params: PruneParams, layer: LayerJob, signal?: AbortSignal): Promise<LayerOutput> {
      if (threads === 0 || layer.rows * layer.cols < parallelMin) return pruneLayer(params, layer);
      const exec = executor();
      return exec.during(() => pruneLayerWith(exec, params, layer, signal));
    },
    crashWorker(index = 0): void {
      exec?.crash(index);
    },
    get restarts(): number {
      return closedRestarts + (exec?.restarts() ?? 0);
    },
    close(): Promise<void> {
      closedRestarts += exec?.restarts() ?? 0;
      exec?.close();
      exec = null;
      return Promise.resolve();
    },
  };
}
