/**
 * The CPU backend: exact, and the production path on hosts without a GPU. Small layers run on the calling
 * thread (a few milliseconds, cheaper than a round trip to a worker); large ones are split by rows across a
 * pool of workers, one per core (at most 64, as no pass has more parts), sharing the tensors through
 * SharedArrayBuffers.
 */
import { cpus } from "node:os";
import { cpuLimit, memoryLimitBytes } from "../runtime/host_limits.ts";
import type { Backend, LayerJob, LayerOutput, PruneParams } from "./backend.ts";
import { CpuPool } from "./cpu_pool.ts";
import { type Executor, pruneLayer, pruneLayerWith } from "./prune_layer.ts";
import { MAX_WORK_PARTS } from "../contract/working_memory.ts";
import { ScratchBuffers } from "./scratch_buffers.ts";

/** Options of `createCpuBackend`. */
export interface CpuBackendOptions {
  /** Worker threads (default: one per core this process may use; at most 64; 0: all on the calling thread). */
  threads?: number;
  /** Layers with fewer elements run on the calling thread (default 2^18). */
  parallelMin?: number;
}

/** The CPU's model name, as `/v1/info` and every response report it. */
function cpuDescription(): string {
  const list = cpus();
  const model = list[0]?.model?.trim() || "unknown CPU";
  return `${model} (${list.length} cores)`;
}

/** Scratch kept between layers for reuse: an eighth of the host's memory (or its container's), at most 2 GiB. */
function scratchBytes(): number {
  return Math.min(2 * 1024 ** 3, Math.floor(memoryLimitBytes() / 8));
}

/**
 * A worker-pool executor of `threads` workers, at most MAX_WORK_PARTS (the CPU backend's own, and benchmarks'); close
 * it when done.
 */
export function createPoolExecutor(threads: number): Executor & {
  close(): void;
  crash(index: number): void;
  restarts(): number;
  /** Bytes of scratch kept for the next layer. */
  keptBytes(): number;
  /** Runs a layer's computation, during which the kept buffers are not idle. */
  during<T>(layer: () => Promise<T>): Promise<T>;
} {
  // Op i of a pass runs on worker i, and no pass has more than MAX_WORK_PARTS ops: workers past that would hold their
  // memory (about 17 MiB each, measured) without ever computing, as on a host of more than 64 cores.
  const pool = new CpuPool(Math.min(threads, MAX_WORK_PARTS));
  const buffers = new ScratchBuffers(scratchBytes());
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
    keptBytes: () => buffers.keptBytes,
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
  const executor = () => (exec ??= createPoolExecutor(threads));
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
    get keptBytes(): number {
      return exec?.keptBytes() ?? 0;
    },
    close(): Promise<void> {
      closedRestarts += exec?.restarts() ?? 0;
      exec?.close();
      exec = null;
      return Promise.resolve();
    },
  };
}
