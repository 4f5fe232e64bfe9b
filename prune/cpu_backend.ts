/**
 * The CPU backend: exact, and the production path on hosts without a GPU. Small layers run on the calling
 * thread (a few milliseconds, cheaper than a round trip to a worker); large ones are split by rows across a
 * pool of workers, one per core, sharing the tensors through SharedArrayBuffers.
 */
import { cpus } from "node:os";
import type { Backend, LayerJob, LayerOutput, PruneParams } from "./backend.ts";
import { CpuPool } from "./cpu_pool.ts";
import { type Executor, pruneLayer, pruneLayerWith } from "./prune_layer.ts";

/** Options of `createCpuBackend`. */
export interface CpuBackendOptions {
  /** Worker threads (default: one per core; 0 runs everything on the calling thread). */
  threads?: number;
  /** Layers with fewer elements run on the calling thread (default 2^18). */
  parallelMin?: number;
}

/** The CPU's model name, as `/v1/info` and every response report it. */
export function cpuDescription(): string {
  const list = cpus();
  const model = list[0]?.model?.trim() || "unknown CPU";
  return `${model} (${list.length} cores)`;
}

/** A worker-pool executor of `threads` workers, for benchmarks that time stages; close it when done. */
export function createPoolExecutor(threads: number): Executor & { close(): void } {
  const pool = new CpuPool(threads);
  return { parts: pool.size, shared: true, all: (make) => pool.all(make), close: () => pool.close() };
}

/** The CPU backend, with a fault drill for tests of the 503 path. */
export interface CpuBackend extends Backend {
  /** Kills one worker as a crash would; requests using it fail with `unavailable`, the next ones succeed. */
  crashWorker(index?: number): void;
}

/** Creates the CPU backend. */
export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  const threads = options.threads ?? Math.max(1, navigator.hardwareConcurrency || cpus().length || 1);
  const parallelMin = options.parallelMin ?? 1 << 18;
  let pool: CpuPool | null = null;
  const executor = (): Executor => {
    pool ??= new CpuPool(threads);
    const p = pool;
    return { parts: p.size, shared: true, all: (make) => p.all(make) };
  };
  return {
    kind: "cpu",
    device: cpuDescription(),
    prune(params: PruneParams, layer: LayerJob, signal?: AbortSignal): Promise<LayerOutput> {
      if (threads === 0 || layer.rows * layer.cols < parallelMin) return pruneLayer(params, layer);
      return pruneLayerWith(executor(), params, layer, signal);
    },
    crashWorker(index = 0): void {
      pool?.crash(index);
    },
    close(): Promise<void> {
      pool?.close();
      pool = null;
      return Promise.resolve();
    },
  };
}
