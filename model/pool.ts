/**
 * Runs the forward pass on Workers, one `LlamaRunner` each: evaluation windows are split between them, and
 * for sequential pruning each worker caches the hidden states of its share of the calibration windows.
 */
import {
  type BlockWeights,
  LINEAR_BIAS,
  type LinearName,
  type LlamaConfig,
  type LlamaWeights,
  storedWeightBytes,
} from "./config.ts";
import { type BlockStats, checkArenaFits, emptyStats, runnerArenaSize } from "./llama.ts";
import { cpuLimit, memoryLimitBytes } from "../runtime/host_limits.ts";
import type { WorkerRequest } from "./_forward_worker.ts";
import type { TokenArray } from "./tokenizer.ts";
import type { WeightMatrix } from "./ops.ts";

type Op = WorkerRequest extends infer R ? R extends { op: infer O } ? O : never : never;
type Payload<O extends Op> = Omit<Extract<WorkerRequest, { op: O }>, "id" | "op">;

/** One worker and its pending requests. */
class Slot {
  readonly worker: Worker;
  #next = 0;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor() {
    this.worker = new Worker(new URL("./_forward_worker.ts", import.meta.url).href, { type: "module" });
    this.worker.onmessage = (e: MessageEvent<{ id: number; result?: unknown; error?: string }>) => {
      const p = this.#pending.get(e.data.id);
      this.#pending.delete(e.data.id);
      if (e.data.error !== undefined) p?.reject(new Error(`forward worker: ${e.data.error}`));
      else p?.resolve(e.data.result);
    };
    this.worker.onerror = (e) => {
      e.preventDefault();
      for (const p of this.#pending.values()) p.reject(new Error(`forward worker crashed: ${e.message}`));
      this.#pending.clear();
    };
  }

  call<O extends Op>(op: O, payload: Payload<O>): Promise<unknown> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, ...payload });
    });
  }
}

/** Options of a pool. */
export interface PoolOptions {
  /** Window length in tokens. */
  seqLen: number;
  /** Number of workers; default: the number of CPU cores, at most 8, and no more than the memory holds. */
  workers?: number;
  /** Calibration windows the pool must be able to cache (split between the workers). */
  calibWindows?: number;
  /** Memory the workers may take, in bytes; default: `memoryForWorkers()`. */
  memoryBytes?: number;
  /** The most windows one call will hand the pool: more workers than that would only sit idle, so none start. */
  mostWindows?: number;
}

/**
 * Host memory a forward worker takes besides its arena and the copy of the weights it is sent: its own runtime.
 * Measured 2026-11-30 (deno task prune on the bundled model, peak RSS): 392 MB with one worker, 765 MB with four.
 * Of the 373 MB more, the arenas make 143 (four of 52 MB against one of 65: the calibration cache is split) and three
 * more copies of the weights 107, which leaves about 41 MB of runtime a worker.
 */
const WORKER_RUNTIME_BYTES = 48 * 2 ** 20;

/** The memory workers may take: what the host has available now, within this process's control group's limit. */
function memoryForWorkers(): number {
  try {
    return Math.min(Deno.systemMemoryInfo().available, memoryLimitBytes() - Deno.memoryUsage().rss);
  } catch {
    return Infinity; // no --allow-sys: nothing to go by
  }
}

/**
 * `weights` copied into one SharedArrayBuffer, for every worker to copy its own from: posting them as they are would
 * clone them into each worker's message (structured clone copies a view's whole buffer: for a checkpoint's 16-bit
 * views, whole shards), serialized on this thread worker after worker. Starting workers for 1.07 GB of float32
 * weights took 19.0-24.4 s for two and 38.3-40.2 s for four that way, 7.9-10.0 s and 12.3-13.2 s shared (2026-12-01,
 * 2 idle AMD EPYC cores).
 */
function shareWeights(weights: LlamaWeights): LlamaWeights {
  const sab = new SharedArrayBuffer(storedWeightBytes(weights));
  let at = 0;
  const place = <T extends Float32Array | Uint16Array>(src: T): T => {
    const Ctor = src.constructor as new (b: ArrayBufferLike, o: number, n: number) => T;
    const dst = new Ctor(sab, at, src.length);
    dst.set(src);
    at += Math.ceil(src.byteLength / 16) * 16;
    return dst;
  };
  const matrix = (m: WeightMatrix): WeightMatrix =>
    m instanceof Float32Array ? place(m) : { dtype: m.dtype, data: place(m.data) };
  const embed = matrix(weights.embed);
  return {
    embed,
    layers: weights.layers.map((b) => {
      const block: BlockWeights = {
        attnNorm: place(b.attnNorm),
        wq: matrix(b.wq),
        wk: matrix(b.wk),
        wv: matrix(b.wv),
        wo: matrix(b.wo),
        ffnNorm: place(b.ffnNorm),
        wGate: matrix(b.wGate),
        wUp: matrix(b.wUp),
        wDown: matrix(b.wDown),
      };
      for (const f of [...Object.values(LINEAR_BIAS), "qNorm", "kNorm"] as const) if (b[f]) block[f] = place(b[f]);
      return block;
    }),
    norm: place(weights.norm),
    lmHead: weights.lmHead === weights.embed ? embed : matrix(weights.lmHead),
  };
}

/** A pool of forward-pass workers holding the same model. */
export class ForwardPool {
  readonly #slots: Slot[];
  readonly cfg: LlamaConfig;
  readonly seqLen: number;
  #calibSplit: number[] = [];

  private constructor(cfg: LlamaConfig, slots: Slot[], seqLen: number) {
    this.cfg = cfg;
    this.#slots = slots;
    this.seqLen = seqLen;
  }

  /** Starts the workers and copies the weights into each; throws before starting any if their arena cannot fit. */
  static async create(cfg: LlamaConfig, weights: LlamaWeights, opts: PoolOptions): Promise<ForwardPool> {
    const cacheFor = (n: number) => Math.ceil((opts.calibWindows ?? 0) / n) * opts.seqLen;
    const weightBytes = storedWeightBytes(weights);
    // Each worker holds its arena and runtime; the weights it copies its own from are shared by all (once).
    const needs = (n: number) => {
      const size = runnerArenaSize(cfg, { seqLen: opts.seqLen, cacheTokens: cacheFor(n) }, undefined, weightBytes);
      return n * (size.total + WORKER_RUNTIME_BYTES) + weightBytes;
    };
    const memory = opts.memoryBytes ?? memoryForWorkers();
    const fitting = (most: number) => {
      let n = Math.max(1, most);
      while (n > 1 && needs(n) > memory) n--;
      return n;
    };
    const most = Math.max(1, opts.mostWindows ?? Infinity);
    const n = Math.min(
      most,
      // cpuLimit, not hardwareConcurrency: a container's CPU quota is what the workers share.
      opts.workers === undefined ? fitting(Math.min(8, cpuLimit(), most)) : opts.workers,
    );
    const cacheTokens = cacheFor(n);
    checkArenaFits(
      cfg,
      { seqLen: opts.seqLen, cacheTokens },
      n === 1 ? "the forward worker" : `each of the ${n} forward workers`,
      weightBytes,
    );
    if (n > 1 && needs(n) > memory) {
      const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
      throw new RangeError(
        `${n} forward workers (--workers) need about ${gib(needs(n))} of memory (each its arena and its runtime, ` +
          `and one copy of the weights they start from), more than the ${gib(memory)} available; ${fitting(n)} would ` +
          "fit",
      );
    }
    const slots = Array.from({ length: n }, () => new Slot());
    const pool = new ForwardPool(cfg, slots, opts.seqLen);
    try {
      const shared = shareWeights(weights);
      await Promise.all(slots.map((s) => s.call("init", { cfg, weights: shared, seqLen: opts.seqLen, cacheTokens })));
    } catch (e) {
      pool.close();
      throw e;
    }
    return pool;
  }

  /** Number of workers. */
  get size(): number {
    return this.#slots.length;
  }

  /** Splits `windows` into near-equal contiguous shares, one per worker. */
  #split(windows: number): number[] {
    const n = this.#slots.length, base = Math.floor(windows / n);
    return this.#slots.map((_, i) => base + (i < windows % n ? 1 : 0));
  }

  /** Per-window loss sums (T - 1 positions each) of `windows` consecutive windows of `tokens`. */
  async losses(tokens: TokenArray, windows: number, onWindow?: (done: number) => void): Promise<Float64Array> {
    const T = this.seqLen, out = new Float64Array(windows);
    // Hand out small batches so that both workers finish together and progress can be reported.
    const batch = 4;
    let next = 0, done = 0, failed = false;
    await Promise.all(this.#slots.map(async (slot) => {
      // Once one worker fails, the others take no more batches: the caller has the error, and nothing more to wait for.
      while (!failed && next < windows) {
        const start = next, count = Math.min(batch, windows - start);
        next += count;
        try {
          const part = await slot.call("loss", {
            tokens: tokens.slice(start * T, (start + count) * T),
            windows: count,
          });
          out.set(part as Float64Array, start);
        } catch (e) {
          failed = true;
          throw e;
        }
        if (failed) return; // another worker failed meanwhile: no progress after the error
        done += count;
        onWindow?.(done);
      }
    }));
    return out;
  }

  /** Embeds calibration windows (concatenated, T tokens each) into the workers' caches. */
  async calibBegin(tokens: TokenArray, windows: number): Promise<void> {
    const T = this.seqLen;
    this.#calibSplit = this.#split(windows);
    let at = 0;
    await Promise.all(this.#slots.map((slot, i) => {
      const count = this.#calibSplit[i]!, start = at;
      at += count;
      return slot.call("cacheEmbed", { tokens: tokens.slice(start * T, (start + count) * T), windows: count });
    }));
  }

  /** Runs block `layer` over the cached calibration windows and returns the summed input statistics. */
  async calibCollect(layer: number): Promise<BlockStats> {
    const parts = await Promise.all(this.#slots.map((s) => s.call("cacheBlock", { layer, collect: true })));
    const total = emptyStats(this.cfg);
    for (const p of parts as BlockStats[]) {
      for (const key of Object.keys(total) as (keyof BlockStats)[]) {
        const acc = total[key], add = p[key];
        for (let j = 0; j < acc.length; j++) acc[j]! += add[j]!;
      }
    }
    return total;
  }

  /** Moves the cached calibration hidden states past block `layer` (with its current, e.g. pruned, weights). */
  async calibAdvance(layer: number): Promise<void> {
    await Promise.all(this.#slots.map((s) => s.call("cacheBlock", { layer, collect: false })));
  }

  /** Zeroes one linear layer's masked weights in every worker (a mask is 1/32 of the f32 weights it prunes). */
  async maskLinear(layer: number, name: LinearName, mask: Uint8Array): Promise<void> {
    // Posting a view clones its whole buffer (for a decoded response, every layer's mask): send a compact copy.
    const own = mask.slice();
    await Promise.all(this.#slots.map((s) => s.call("maskLinear", { layer, name, mask: own })));
  }

  /** Stops the workers. */
  close(): void {
    for (const s of this.#slots) s.worker.terminate();
  }
}
