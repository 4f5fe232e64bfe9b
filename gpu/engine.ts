/**
 * The WebGPU pruning engine: one device, its compiled pipelines and buffer pool, and `prune()` for one layer.
 * It runs wherever WebGPU does; the service runs it inside `gpu/worker.ts` (Deno's `mapAsync` blocks the event
 * loop), the benchmark in-process.
 *
 * One layer, as straight-line stages (each a compute pass, labelled; kernels in `kernels/`):
 *   decode  raw bytes -> f32 W, first non-finite index                        (row-tiles of W)
 *   stats   row sums and 2-level column sums (zpruner, ria)
 *   centred Z-Pruner's means, centred sums of squares, small-weight count, 1/stds and alpha (one workgroup each for
 *           the whole-matrix reductions), so that no method needs the host before the final read-back
 *   score   W -> score in place
 *   select  layer: 3 radix passes + tie count/scan (idle when every tie is pruned) + mask; row: a workgroup per
 *           row; N:M: a thread per group (a workgroup per group past M = 64)
 *   apply   pruned weights in the request's dtype (when asked)
 * Matrices larger than the device's storage-binding limit are cut into tiles of whole rows; every kernel takes the
 * tile's global offsets as uniforms, and the global arrays (row/column statistics, mask, tie counts) span all tiles.
 */
import { ZpruneError } from "../contract/errors.ts";
import { type DType, DTYPE_BYTES } from "../contract/api.ts";
import type { LayerJob, LayerOutput, PruneParams } from "../prune/backend.ts";
import { decodeAt } from "../prune/decode.ts";
import { maskStats } from "../prune/mask_stats.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { zprunerAlpha } from "../prune/scores.ts";
import { BufferPool, poolSize } from "./buffer_pool.ts";
import { preferVulkan } from "./driver_lifetime.ts";
import { GpuOutOfMemory, Job, type StageRecorder, type StageTimes } from "./_job.ts";

export type { StageTimes } from "./_job.ts";
import { flattenWorkgroups, kernelCode, type KernelDef, packUniforms } from "./kernel.ts";
import {
  apply,
  centred,
  colReduce,
  colStats,
  decode,
  KERNELS,
  maskLayer,
  rowStats,
  score,
  selectHist,
  selectNm,
  selectPick,
  selectRow,
  tieCount,
  tieScan,
  Z_SCALARS,
  Z_SCALARS_BYTES,
  zMeans,
  zSpread,
} from "./kernels/mod.ts";

/** How to open the engine. */
export interface EngineOptions {
  /** Accept a software (fallback) adapter such as lavapipe. */
  allowFallback: boolean;
  /** Cap on the bytes of one row-tile (default: the device's storage-binding limit); tests lower it to tile. */
  maxTileBytes?: number;
  /**
   * Treat the storage-binding limit as at most this many bytes (tiles and the whole-layer arrays alike), so that tests
   * meet the limits of a small device on any adapter.
   */
  maxBindingBytes?: number;
  /** Idle bytes the buffer pool may keep (default 2 GiB). */
  poolBytes?: number;
}

const DTYPE_CODE: Record<DType, number> = { f32: 0, f16: 1, bf16: 2 };
const METHOD_CODE = { magnitude: 0, wanda: 1, ria: 2, zpruner: 3 } as const;

const STORAGE = GPUBufferUsage.STORAGE;
const COPY_SRC = GPUBufferUsage.COPY_SRC;
const COPY_DST = GPUBufferUsage.COPY_DST;

/** Rows per block of `col_stats.wgsl`; keys per block of `tie_count`/`mask_layer`. */
const COL_BLOCK_ROWS = 256;
const KEY_BLOCK = 8192;
const CENTRED_BLOCK = 16384;
/**
 * Digits of the layer-wide radix select, most significant first: [shift, width]. Three passes over the 32-bit keys
 * (one full read fewer than four 8-bit digits); 2^11 bins is what two histogram copies fit in 16 KiB of workgroup
 * storage. Must match MAX_BINS in select_hist.wgsl and select_pick.wgsl.
 */
const LAYER_DIGITS: readonly (readonly [shift: number, bits: number])[] = [[21, 11], [10, 11], [0, 10]];
/** Histogram bins per pass in the global histogram buffer (the widest digit). */
const HIST_BINS = 2048;

/**
 * Largest M that select_nm ranks with a thread per group; larger groups go through select_row (the request schema
 * allows M up to 9999).
 */
const NM_THREAD_MAX_M = 64;

/** One row-tile of a layer: rows [row0, row0 + rows), elements [base, base + count). */
interface Tile {
  index: number;
  row0: number;
  rows: number;
  base: number;
  count: number;
  /** Global index of the tile's first block of 256 rows (col_stats). */
  colBlock0: number;
  /** Global index of the tile's first block of 8192 keys (tie_count, mask_layer). */
  keyBlock0: number;
  /** Global index of the tile's first `centred` workgroup. */
  centredWg0: number;
}

/**
 * A layer's raw weight bytes kept on the GPU (`GpuEngine.upload`), for timing the stages on resident weights as the
 * torch anchor does; `prune(..., { resident })` then skips the upload. The benchmark's tool, not the service's.
 */
export interface ResidentWeights {
  readonly rows: number;
  readonly cols: number;
  readonly dtype: DType;
  /** One buffer of raw bytes per row-tile, in the engine's tile plan. */
  readonly buffers: readonly GPUBuffer[];
  /** Frees the buffers. */
  destroy(): void;
}

/** Cuts rows x cols into tiles of whole rows, each at most `tileBytes` as f32. */
export function planTiles(rows: number, cols: number, tileBytes: number): Tile[] {
  // col_stats dispatches ceil(rows/256) workgroups on y, at most 65535.
  const perTile = Math.min(Math.floor(tileBytes / (cols * 4)), 65535 * COL_BLOCK_ROWS);
  if (perTile < 1 && rows > 0) {
    throw new RangeError(`a row of ${cols} f32 values does not fit a ${tileBytes}-byte tile`);
  }
  const tiles: Tile[] = [];
  let colBlock0 = 0, keyBlock0 = 0, centredWg0 = 0;
  for (let row0 = 0; row0 < rows; row0 += perTile) {
    const r = Math.min(perTile, rows - row0);
    const count = r * cols;
    tiles.push({ index: tiles.length, row0, rows: r, base: row0 * cols, count, colBlock0, keyBlock0, centredWg0 });
    colBlock0 += Math.ceil(r / COL_BLOCK_ROWS);
    keyBlock0 += Math.ceil(count / KEY_BLOCK);
    centredWg0 += Math.ceil(count / CENTRED_BLOCK);
  }
  return tiles;
}

/** Adapter description for responses: the driver's description, else vendor and architecture. */
function describe(info: GPUAdapterInfo): string {
  return info.description || [info.vendor, info.architecture].filter(Boolean).join(" ") || "WebGPU adapter";
}

/** Options of `GpuEngine.prune` (see there). */
export interface PruneOptions {
  profile?: boolean | "wall" | "per-dispatch";
  trace?: (event: string) => void;
  resident?: ResidentWeights;
}

/**
 * Thrown by `GpuEngine.prune` instead of computing on the CPU when `exactElsewhere` is set, or for resident weights:
 * the layer needs the exact CPU path, and whoever called can run it where more threads are (the WebGPU worker hands
 * it to the main thread's CPU backend). `layer` is intact.
 */
export class ExactPathNeeded extends Error {
  override name = "ExactPathNeeded";
  constructor(readonly why: string) {
    super(`the layer needs the exact CPU path: ${why}`);
  }
}

/** A WebGPU device with cached pipelines and pooled buffers that prunes one layer at a time. */
export class GpuEngine {
  readonly device: GPUDevice;
  /** The adapter's description. */
  readonly description: string;
  readonly isFallback: boolean;
  /** Set once the device is lost; the engine is then unusable. */
  lost: string | null = null;
  /** Layers computed on the CPU: f32 statistics could not match the CPU backend's (see sumsOutOfRange,
   * spreadTooSmall, zSafeThreshold), or the layer does not fit this device's storage bindings or free memory. */
  exactFallbacks = 0;
  /** GPU attempts that ran out of device memory (each is retried once with the pool emptied, then goes exact). */
  outOfMemory = 0;
  /** Told each layer that takes the exact CPU path here, and why. */
  onExactPath: ((layer: string, why: string) => void) | null = null;
  /** Throw `ExactPathNeeded` for such a layer rather than compute it on this thread (which has one core). */
  exactElsewhere = false;
  readonly #pool: BufferPool;
  readonly #pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  readonly #tileBytes: number;
  /** The storage-binding limit in force (the device's, or less by `maxBindingBytes`). */
  readonly #bindingBytes: number;
  readonly #timestamps: boolean;
  #dummy: GPUBuffer | null = null;

  private constructor(device: GPUDevice, info: GPUAdapterInfo, fallback: boolean, opts: EngineOptions) {
    this.device = device;
    this.description = describe(info);
    this.isFallback = fallback;
    this.#pool = new BufferPool(device, opts.poolBytes ?? 2 ** 31);
    this.#bindingBytes = Math.min(device.limits.maxStorageBufferBindingSize, opts.maxBindingBytes ?? Infinity);
    const limit = Math.min(this.#bindingBytes, device.limits.maxBufferSize);
    this.#tileBytes = Math.floor(Math.min(limit, opts.maxTileBytes ?? Infinity) / 256) * 256;
    this.#timestamps = device.features.has("timestamp-query");
    device.lost.then((info) => {
      this.lost = info.message || String(info.reason) || "device lost";
    });
  }

  /** Opens the first adapter; null when there is none, or it is a fallback and `allowFallback` is false. */
  static async create(opts: EngineOptions): Promise<GpuEngine | null> {
    if (typeof navigator === "undefined" || !navigator.gpu) return null;
    preferVulkan(); // a no-op in a worker of createWebGpuBackend(), which already chose
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return null;
    const info = adapter.info;
    // Older implementations expose the flag on the adapter, newer ones on its info.
    const fallback = Boolean(
      (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
        (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
    );
    if (fallback && !opts.allowFallback) return null;
    const features: GPUFeatureName[] = [];
    if (adapter.features.has("shader-f16")) features.push("shader-f16");
    // Only `prune(..., { profile: true })` (the benchmark) writes timestamps; requesting the feature costs nothing.
    if (adapter.features.has("timestamp-query")) features.push("timestamp-query");
    const device = await adapter.requestDevice({
      label: "zprune",
      requiredFeatures: features,
      requiredLimits: {
        maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
        maxBufferSize: adapter.limits.maxBufferSize,
      },
    });
    return new GpuEngine(device, info, fallback, opts);
  }

  /** The compiled pipeline of a kernel, built once. */
  #pipeline(k: KernelDef): { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout } {
    let p = this.#pipelines.get(k.name);
    if (!p) {
      const layout = this.device.createBindGroupLayout({
        label: `${k.name}.layout`,
        entries: k.bindings.map((kind, binding) => ({
          binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: kind === "uniform" ? "uniform" : kind === "rw" ? "storage" : "read-only-storage" },
        })),
      });
      const module = this.device.createShaderModule({ label: k.name, code: kernelCode(k) });
      const pipeline = this.device.createComputePipeline({
        label: k.name,
        layout: this.device.createPipelineLayout({ label: `${k.name}.pipeline-layout`, bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: "main" },
      });
      this.#pipelines.set(k.name, p = { pipeline, layout });
    }
    return p;
  }

  /** Compiles every kernel now (so the first request does not pay for it). */
  async warm(): Promise<void> {
    this.device.pushErrorScope("validation");
    for (const k of KERNELS) this.#pipeline(k);
    const err = await this.device.popErrorScope();
    if (err) throw new ZpruneError("unavailable", `WebGPU kernel compilation failed: ${err.message}`);
  }

  /**
   * Prunes one layer; one call at a time per engine (a job's error scopes stay open across its awaits, and a second
   * call's would interleave with them). With `profile`, also measures GPU time per stage: timestamp queries where
   * the adapter has them (unless `profile` is "wall"), else wall time around each stage's own submit (which
   * serialises the stages, so use it only to profile); "per-dispatch" puts each dispatch in a timed pass of its own
   * and reports `stage.kernel` sums (where timestamps exist; the extra passes add barriers, so totals exceed a
   * stage-timed run's).
   * `trace` is told each recorded stage, submit and read-back as it happens (debugging).
   * `resident` (from `upload()` of this layer) replaces the upload of `layer.weight`.
   */
  async prune(
    params: PruneParams,
    layer: LayerJob,
    opts: PruneOptions = {},
  ): Promise<{ output: LayerOutput; stages?: StageTimes }> {
    if (opts.resident) this.#checkResident(layer, opts.resident);
    if (this.lost) throw new ZpruneError("unavailable", `WebGPU device lost: ${this.lost}`);
    let oom: GpuOutOfMemory | null = null;
    for (let attempt = 1; attempt <= 2; attempt++) {
      if (oom) {
        // Idle buffers pooled for earlier layers' shapes may be what filled the device: free them and try again.
        if (this.#pool.idleBytes === 0) break;
        this.#pool.clear();
        // wgpu frees a destroyed buffer that a submit used once it has seen that submit complete, which it learns
        // when the device is polled; this wait polls it (lavapipe freed such buffers at once; no GPU measured).
        await this.device.queue.onSubmittedWorkDone();
      }
      try {
        return await this.#attempt(params, layer, opts);
      } catch (e) {
        if (!(e instanceof GpuOutOfMemory)) throw e;
        oom = e;
        this.outOfMemory++;
      }
    }
    // The layer does not fit in what the device has free: the exact CPU path answers it, as it does a layer over the
    // device's binding limits, rather than a 503 that every retry of the same layer would meet again.
    const output = await this.#exact(params, layer, `the GPU ran out of memory (${oom!.message})`, opts.resident);
    return { output };
  }

  /** One try of `prune()` on the GPU. */
  async #attempt(
    params: PruneParams,
    layer: LayerJob,
    opts: PruneOptions,
  ): Promise<{ output: LayerOutput; stages?: StageTimes }> {
    const profile = opts.profile !== undefined && opts.profile !== false;
    const timestamps = (opts.profile === true || opts.profile === "per-dispatch") && this.#timestamps;
    const perDispatch = opts.profile === "per-dispatch";
    const job = new Job(this.device, this.#pool, { profile, timestamps, trace: opts.trace, perDispatch });
    try {
      const output = await this.#run(job, params, layer, opts.resident);
      const stages = profile ? await job.stageTimes() : undefined;
      return { output, stages };
    } catch (e) {
      await job.abandon();
      if (e instanceof ZpruneError || e instanceof ExactPathNeeded) throw e;
      throw new ZpruneError("unavailable", `WebGPU failed: ${e instanceof Error ? e.message : String(e)}`, {
        cause: e,
      });
    } finally {
      job.finish();
    }
  }

  /** Uploads a layer's raw weight bytes once, tile by tile, for `prune(..., { resident })`. */
  upload(layer: LayerJob): ResidentWeights {
    const size = DTYPE_BYTES[layer.dtype];
    const buffers = planTiles(layer.rows, layer.cols, this.#tileBytes).map((t) => {
      const bytes = t.count * size;
      const b = this.device.createBuffer({
        label: `resident-raw[${t.index}]`,
        size: Math.max(4, Math.ceil(bytes / 4) * 4),
        usage: STORAGE | COPY_DST,
      });
      uploadBytes(this.device.queue, b, layer.weight.subarray(t.base * size, t.base * size + bytes));
      return b;
    });
    const { rows, cols, dtype } = layer;
    return { rows, cols, dtype, buffers, destroy: () => buffers.forEach((b) => b.destroy()) };
  }

  /**
   * Throws a TypeError unless `resident` is `layer`'s upload on this engine: a caller's bug, so thrown before any job,
   * whose errors would become a retryable `unavailable`.
   */
  #checkResident(layer: LayerJob, resident: ResidentWeights): void {
    const { rows, cols, dtype, name } = layer;
    // The same shape and dtype give the same tile plan on this engine; a row wider than a tile has no plan at all.
    if (
      resident.rows !== rows || resident.cols !== cols || resident.dtype !== dtype ||
      (cols * 4 <= this.#tileBytes && resident.buffers.length !== planTiles(rows, cols, this.#tileBytes).length)
    ) {
      throw new TypeError(
        `resident weights are ${resident.rows}x${resident.cols} ${resident.dtype}, not layer ${name}'s`,
      );
    }
  }

  /** Releases every GPU resource. */
  destroy(): void {
    this.#pool.clear();
    this.#dummy?.destroy();
    this.device.destroy();
  }

  /** A bound buffer for kernels whose statistics inputs this method does not use. */
  #dummyBuffer(): GPUBuffer {
    return this.#dummy ??= this.device.createBuffer({ label: "unused-stats", size: 256, usage: STORAGE });
  }

  /** Records one dispatch of kernel `k` with `buffers` in binding order (uniforms appended here). */
  #dispatch<U extends string>(
    job: Job,
    rec: StageRecorder,
    k: KernelDef<U>,
    buffers: GPUBuffer[],
    u: Readonly<Record<U, number>>,
  ): void {
    const [x, y] = flattenWorkgroups(k.workgroups(u));
    if (x === 0 || y === 0) return;
    const data = packUniforms(k, u);
    const ub = job.buffer(data.byteLength, GPUBufferUsage.UNIFORM | COPY_DST, `${k.name}.uniforms`);
    this.device.queue.writeBuffer(ub, 0, data);
    const { pipeline, layout } = this.#pipeline(k as KernelDef);
    const bindGroup = this.device.createBindGroup({
      label: k.name,
      layout,
      entries: [...buffers, ub].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    rec.dispatch(k.name, pipeline, bindGroup, x, y);
  }

  /**
   * Computes `layer` with the CPU backend's exact code, in this thread (counted and reported once answered), or
   * throws `ExactPathNeeded` with `exactElsewhere` or resident weights.
   */
  async #exact(params: PruneParams, layer: LayerJob, why: string, resident?: ResidentWeights): Promise<LayerOutput> {
    // Resident weights (the bench's) are on the GPU only: the caller reports the case instead.
    if (resident || this.exactElsewhere) throw new ExactPathNeeded(why);
    const output = await pruneLayer(params, layer); // a non-finite weight throws here, and is not counted
    this.exactFallbacks++;
    this.onExactPath?.(layer.name, why);
    return { ...output, exactPath: why };
  }

  async #run(job: Job, params: PruneParams, layer: LayerJob, resident?: ResidentWeights): Promise<LayerOutput> {
    const { rows, cols, dtype, name } = layer;
    const n = rows * cols;
    const { method, pattern } = params;
    if (n === 0) return emptyOutput(params);
    // Unreachable through the server (ZPRUNE_MAX_LAYER_ELEMENTS stops below 2^32); both backends index in 32 bits.
    if (n >= 2 ** 32) throw new ZpruneError("too_large", `layer ${name}: ${n} elements, 2^32 or more`);
    // A layer the contract accepts but this device cannot hold is answered too, on the exact CPU path.
    if (cols * 4 > this.#tileBytes) {
      const why = `a row of ${cols} columns, over the device's ${this.#tileBytes}-byte tiles`;
      return this.#exact(params, layer, why, resident);
    }
    const tiles = planTiles(rows, cols, this.#tileBytes);
    const last = tiles[tiles.length - 1]!;
    const colBlocks = last.colBlock0 + Math.ceil(last.rows / COL_BLOCK_ROWS);
    const keyBlocks = last.keyBlock0 + Math.ceil(last.count / KEY_BLOCK);
    const centredWgs = last.centredWg0 + Math.ceil(last.count / CENTRED_BLOCK);
    const maskBytes = Math.ceil(n / 32) * 4;
    const limit = this.#bindingBytes;
    // The methods that use row and column sums (the narrowed name serves the exact-path check after read-back).
    const statsMethod = method === "zpruner" || method === "ria" ? method : null;
    const needStats = statsMethod !== null;
    // The whole-layer arrays are not tiled: each must fit one binding. Only those this method and pattern use count.
    const globals: [string, number][] = [["mask", maskBytes]];
    if (needStats) {
      globals.push(["column partials", colBlocks * cols * 12], ["row statistics", rows * 12]);
      globals.push(["column statistics", cols * 12]);
    }
    if (method === "zpruner") globals.push(["centred partials", centredWgs * 12]);
    if (method !== "magnitude") globals.push(["activations", cols * 8]);
    if (pattern.kind === "layer") globals.push(["tie counts", keyBlocks * 4]);
    const over = globals.find(([, bytes]) => poolSize(bytes) > limit);
    if (over) {
      const why = `its ${over[0]} need ${over[1]} bytes, over the device's ${limit}-byte storage bindings`;
      return this.#exact(params, layer, why, resident);
    }
    const size = DTYPE_BYTES[dtype];

    // --- decode (+ stats): upload each tile's bytes, widen to f32, find the first non-finite weight.
    const bad = job.buffer(8, STORAGE | COPY_SRC | COPY_DST, "non-finite-index");
    this.device.queue.writeBuffer(bad, 0, new Uint32Array([0xffffffff, 0]));
    const raw: GPUBuffer[] = [], ws: GPUBuffer[] = [];
    for (const t of tiles) {
      const bytes = t.count * size;
      if (resident) {
        raw.push(resident.buffers[t.index]!);
      } else {
        const rb = job.buffer(Math.ceil(bytes / 4) * 4, STORAGE | COPY_DST, `raw[${t.index}]`);
        uploadBytes(this.device.queue, rb, layer.weight.subarray(t.base * size, t.base * size + bytes));
        raw.push(rb);
      }
      ws.push(job.buffer(t.count * 4, STORAGE | COPY_SRC, `weights-scores[${t.index}]`));
    }
    await job.stage("decode", (rec) => {
      for (const t of tiles) {
        this.#dispatch(job, rec, decode, [raw[t.index]!, ws[t.index]!, bad], {
          count: t.count,
          dtype: DTYPE_CODE[dtype],
          base: t.base,
        });
      }
    });
    let rowSt = this.#dummyBuffer(), colSt = this.#dummyBuffer();
    if (needStats) {
      rowSt = job.buffer(rows * 12, STORAGE | COPY_SRC, "row-stats");
      colSt = job.buffer(cols * 12, STORAGE | COPY_SRC, "col-stats");
      const part = job.buffer(colBlocks * cols * 12, STORAGE, "col-partials");
      await job.stage("stats", (rec) => {
        for (const t of tiles) {
          const w = ws[t.index]!;
          this.#dispatch(job, rec, rowStats, [w, rowSt], { rows: t.rows, cols, row0: t.row0 });
          this.#dispatch(job, rec, colStats, [w, part], { rows: t.rows, cols, block0: t.colBlock0 });
        }
        this.#dispatch(job, rec, colReduce, [part, colSt], { cols, blocks: colBlocks });
      });
    }
    // --- Z-Pruner's whole-matrix scalars, reduced on the GPU (z_means after the sums, z_spread after the centred
    // pass) so that no method needs the host before the final read-back; a bad weight is reported from that read.
    let scalars = this.#dummyBuffer();
    if (method === "zpruner") {
      scalars = job.buffer(Z_SCALARS_BYTES, STORAGE | COPY_SRC, "z-scalars");
      const part = job.buffer(centredWgs * 12, STORAGE, "centred-partials");
      await job.stage("centred", (rec) => {
        this.#dispatch(job, rec, zMeans, [rowSt, colSt, scalars], { rows, cols, n });
        for (const t of tiles) {
          this.#dispatch(job, rec, centred, [ws[t.index]!, rowSt, colSt, scalars, part], {
            count: t.count,
            cols,
            row0: t.row0,
            wg0: t.centredWg0,
          });
        }
        this.#dispatch(job, rec, zSpread, [part, scalars], { count: centredWgs, n });
      });
    }

    // --- scores, in place.
    let actBuf = this.#dummyBuffer(); // magnitude reads no activations
    if (method !== "magnitude") {
      actBuf = job.buffer(cols * 8, STORAGE | COPY_DST, "act");
      this.device.queue.writeBuffer(actBuf, 0, splitActivations(layer.actNormSq, params.exponent, cols));
    }
    await job.stage("score", (rec) => {
      for (const t of tiles) {
        this.#dispatch(job, rec, score, [rowSt, colSt, actBuf, scalars, ws[t.index]!, bad], {
          count: t.count,
          cols,
          row0: t.row0,
          method: METHOD_CODE[method],
        });
      }
    });

    // --- selection into the bit-packed mask.
    const mask = job.buffer(maskBytes, STORAGE | COPY_SRC | COPY_DST, "mask");
    const state = job.buffer(16, STORAGE | COPY_SRC | COPY_DST, "select-state");
    let k = 0;
    if (pattern.kind === "layer") k = Math.floor(pattern.sparsity * n);
    else if (pattern.kind === "row") k = Math.floor(pattern.sparsity * cols);
    else if (cols % pattern.m !== 0) {
      throw new ZpruneError("shape_mismatch", `layer ${name}: cols ${cols} is not a multiple of M = ${pattern.m}`);
    }
    const enc = job.encoder;
    enc.clearBuffer(mask, 0, mask.size);
    let hist: GPUBuffer | null = null, ties: GPUBuffer | null = null;
    if (pattern.kind === "layer" && k > 0) {
      hist = job.buffer(LAYER_DIGITS.length * HIST_BINS * 4, STORAGE | COPY_DST, "select-histograms");
      enc.clearBuffer(hist, 0, hist.size);
      this.device.queue.writeBuffer(state, 0, new Uint32Array([0, k, 0, 0]));
      ties = job.buffer(keyBlocks * 4, STORAGE, "tie-counts");
    }
    await job.stage("select", (rec) => {
      if (pattern.kind === "layer") {
        if (k === 0) return;
        LAYER_DIGITS.forEach(([shift, bits], p) => {
          const bins = 1 << bits;
          const hiMask = shift + bits >= 32 ? 0 : (~((1 << (shift + bits)) - 1)) >>> 0;
          for (const t of tiles) {
            this.#dispatch(job, rec, selectHist, [ws[t.index]!, state, hist!], {
              count: t.count,
              shift,
              hi_mask: hiMask,
              pass_index: p,
              bins,
            });
          }
          this.#dispatch(job, rec, selectPick, [hist!, state], { pass_index: p, shift, bins });
        });
        for (const t of tiles) {
          this.#dispatch(job, rec, tieCount, [ws[t.index]!, state, ties!], { count: t.count, block0: t.keyBlock0 });
        }
        this.#dispatch(job, rec, tieScan, [ties!, state], { blocks: keyBlocks });
        for (const t of tiles) {
          this.#dispatch(job, rec, maskLayer, [ws[t.index]!, state, ties!, mask], {
            count: t.count,
            base: t.base,
            block0: t.keyBlock0,
          });
        }
      } else if (pattern.kind === "row") {
        if (k === 0) return;
        for (const t of tiles) {
          this.#dispatch(job, rec, selectRow, [ws[t.index]!, mask], { rows: t.rows, cols, base: t.base, k });
        }
      } else if (pattern.m > NM_THREAD_MAX_M) {
        // A group of M consecutive keys is a row of M columns: per-row selection of the N lowest, a workgroup each,
        // instead of one thread ranking M keys against M (M^2 work in one thread).
        for (const t of tiles) {
          this.#dispatch(job, rec, selectRow, [ws[t.index]!, mask], {
            rows: t.count / pattern.m,
            cols: pattern.m,
            base: t.base,
            k: pattern.n,
          });
        }
      } else {
        for (const t of tiles) {
          this.#dispatch(job, rec, selectNm, [ws[t.index]!, mask], {
            groups: t.count / pattern.m,
            m: pattern.m,
            n: pattern.n,
            base: t.base,
          });
        }
      }
    });

    // --- pruned weights in the request's dtype.
    const outs: GPUBuffer[] = [];
    if (params.returnWeight) {
      for (const t of tiles) {
        outs.push(job.buffer(raw[t.index]!.size, STORAGE | COPY_SRC, `pruned-weights[${t.index}]`));
      }
      await job.stage("apply", (rec) => {
        for (const t of tiles) {
          const bytes = t.count * size;
          this.#dispatch(job, rec, apply, [raw[t.index]!, mask, outs[t.index]!], {
            words: Math.ceil(bytes / 4),
            dtype: DTYPE_CODE[dtype],
            base: t.base,
            count: t.count,
          });
        }
      });
    }

    // --- read back: mask, threshold state, bad weights, row and column sums, Z-Pruner's scalars, weights and
    // scores per tile.
    const wanted: GPUBuffer[] = [mask, state, bad];
    const sizes: number[] = [maskBytes, 8, 8];
    if (needStats) {
      wanted.push(rowSt, colSt);
      sizes.push(rows * 12, cols * 12);
    }
    if (method === "zpruner") {
      wanted.push(scalars);
      sizes.push(Z_SCALARS_BYTES);
    }
    if (params.returnWeight) {
      for (const t of tiles) {
        wanted.push(outs[t.index]!);
        sizes.push(t.count * size);
      }
    }
    if (params.returnScore) {
      for (const t of tiles) {
        wanted.push(ws[t.index]!);
        sizes.push(t.count * 4);
      }
    }
    const back = await job.read(wanted, sizes);
    const badOut = new Uint32Array(back[2]!);
    checkFinite(layer, badOut[0]!);
    let at = 3;
    let outOfRange = badOut[1] !== 0 ? "a subnormal weight or score" : null;
    let rowSums = new Float32Array(0), colSums = new Float32Array(0);
    if (statsMethod !== null) { // the row and column sums came back
      rowSums = new Float32Array(back[at++]!);
      colSums = new Float32Array(back[at++]!);
      outOfRange ??= sumsOutOfRange(rowSums, cols, "row", statsMethod) ??
        sumsOutOfRange(colSums, rows, "column", statsMethod);
    }
    const zScalars = method === "zpruner" ? new Uint32Array(back[at++]!) : null;
    const stateOut = new Uint32Array(back[1]!);
    const layerThreshold = new Float32Array(stateOut.buffer, 0, 1)[0]!; // select_pick's, for the layer pattern
    if (zScalars !== null) {
      const z = new Float32Array(zScalars.buffer);
      outOfRange ??= spreadTooSmall(z, n) ??
        zSelectionUnsafe(z, params, layer, k, layerThreshold, new Uint32Array(back[0]!), rowSums, colSums);
    }
    if (outOfRange !== null) {
      // f32 statistics (or a GPU's flush of subnormals) would give other masks than the CPU backend's f64 ones:
      // compute this layer exactly, on the CPU (here, or handed back: see #exact). Trained models' layers come near
      // only at sparsities of a few percent or less (zSafeThreshold).
      return this.#exact(params, layer, outOfRange, resident);
    }
    const maskOut = new Uint8Array(back[0]!, 0, Math.ceil(n / 8));
    let weightOut: Uint8Array | undefined, scoreOut: Float32Array | undefined;
    if (params.returnWeight) weightOut = concat(back.slice(at, at += tiles.length), n * size);
    if (params.returnScore) scoreOut = new Float32Array(concat(back.slice(at, at += tiles.length), n * 4).buffer);

    const ms = maskStats(maskOut, rows, cols);
    const stats: LayerOutput["stats"] = {
      pruned: ms.pruned,
      total: n,
      sparsity: ms.pruned / n,
      rowSparsity: ms.rowSparsity,
      nonFinite: 0,
    };
    if (pattern.kind === "layer" && k > 0) stats.threshold = layerThreshold;
    if (method === "zpruner") {
      // alpha in f64 from the exact count, as the CPU backend forms it (the kernels scored with its f32 rounding).
      const small = zScalars![Z_SCALARS.small]!;
      stats.alpha = zprunerAlpha(small, n);
    }
    const output: LayerOutput = { mask: maskOut.slice(), stats };
    if (weightOut) output.weight = weightOut;
    if (scoreOut) output.score = scoreOut;
    return output;
  }
}

/**
 * act_j = actNormSq_j^(exponent/2) in f64 (all ones without activations), as `score.wgsl` takes it: per column the
 * f32 bits of m_j and the i32 e_j with act_j = m_j * 2^e_j, m_j in [1, 2] after rounding to f32 (0 and infinity
 * keep e_j = 0). A large exponent takes act far outside f32's range where the score itself may not be.
 */
export function splitActivations(
  actNormSq: Float32Array | null,
  exponent: number,
  cols: number,
): Uint32Array<ArrayBuffer> {
  const out = new Uint32Array(cols * 2);
  const m = new Float32Array(out.buffer);
  const e = new Int32Array(out.buffer);
  const half = exponent / 2;
  for (let j = 0; j < cols; j++) {
    const a = actNormSq ? actNormSq[j]! ** half : 1;
    if (a === 0 || !Number.isFinite(a)) {
      m[2 * j] = a;
      continue;
    }
    // log2 may land one off near a power of two (even on 1024 just below the largest double, where 2^1024 is
    // infinite), and 2^k is not a double below 2^-1074.
    const k0 = Math.floor(Math.log2(a));
    let k = Math.min(Math.max(k0, -1074), 1023);
    let f = a / 2 ** k;
    if (f >= 2) [f, k] = [f / 2, k + 1];
    else if (f < 1 && k > -1074) [f, k] = [f * 2, k - 1];
    m[2 * j] = f;
    e[2 * j + 1] = k;
  }
  return out;
}

/**
 * RIA divides |w| by its row and column sums of |w| (`safe_div` in score.wgsl). WGSL bounds x / y only for |y| in
 * [2^-126, 2^126], and GPUs that compute x * (1 / y) (NVIDIA's division) flush 1 / y to zero for y >= 2^126, so every
 * quotient over such a sum, and the score with it, would be 0 (emulated on lavapipe in a review; lavapipe itself
 * divides exactly). Sums below 2^-126 need subnormal weights, which decode.wgsl already flags.
 */
const RIA_SUM_MAX = 2 ** 126;

/**
 * Why f32 row or column sums ([sumSq, sum, sumAbs] per line of `terms` weights) cannot stand in for the CPU
 * backend's f64 ones for `method`, or null when they can. Z-Pruner uses sumSq and sum: either overflowed, or a line
 * with nonzero weights has a sum of squares so small that squares below 2^-126 (subnormal, or flushed to zero by the
 * GPU) may have lost more than 2^-23 of it. RIA uses sumAbs: it overflowed, or it is RIA_SUM_MAX or more.
 */
export function sumsOutOfRange(
  sums: Float32Array,
  terms: number,
  line: "row" | "column",
  method: "zpruner" | "ria",
): string | null {
  const floor = terms * 2 ** -103;
  for (let i = 0; i < sums.length; i += 3) {
    const sq = sums[i]!, sum = sums[i + 1]!, abs = sums[i + 2]!;
    if (method === "ria") {
      if (!Number.isFinite(abs)) return `${line} ${i / 3}'s sum of |w| overflows float32`;
      if (abs >= RIA_SUM_MAX) return `${line} ${i / 3}'s sum of |w| is 2^126 or more, beyond WGSL's division`;
    } else if (!Number.isFinite(sq) || !Number.isFinite(sum)) {
      return `${line} ${i / 3}'s sums overflow float32`;
    } else if (abs > 0 && sq < floor) {
      return `${line} ${i / 3}'s sum of squares underflows float32`;
    }
  }
  return null;
}

/**
 * Below this std / root mean square of Wr or Wc, Z-Pruner's z-scores are beyond f32 (the CPU backend works in f64):
 * (W / norm - mean) cancels most of its bits, the f32 mean's own rounding shifts every z alike, and a zero std
 * (entries equal in exact arithmetic, as one row or a constant matrix) cannot be told from rounding. 1/4 is a mean
 * about 3.9 stds from zero. Measured on lavapipe in reviews: f16 weights 1 + N(0, σ) left the contract's 1e-5 band
 * at σ = 1e-2 (std/rms 0.01) and sat at its edge at 0.065; near-constant matrices with 0.5-1% zero or zero-mean rows
 * (std/rms 0.07-0.15) left it too. Trained layers (mean near 0) have std/rms near 1, all-positive random ones 0.5-0.6.
 */
const Z_SPREAD_MIN = 1 / 4;

/**
 * Why Z-Pruner's scalars as `z_spread` left them ([meanR, meanC, thr, invStdR, invStdC, ...]) are too coarse for
 * f32 z-scores, or null when they are not: see Z_SPREAD_MIN.
 */
function spreadTooSmall(scalars: Float32Array, n: number): string | null {
  if (n < 2) return null; // one element: z = 0 on both backends
  const lines = [["row", Z_SCALARS.meanR, Z_SCALARS.invStdR], ["column", Z_SCALARS.meanC, Z_SCALARS.invStdC]] as const;
  for (const [axis, meanAt, invAt] of lines) {
    const mean = scalars[meanAt]!, inv = scalars[invAt]!;
    const std = inv > 0 ? 1 / inv : 0;
    const rms = Math.sqrt((std * std * (n - 1)) / n + mean * mean);
    if (std < Z_SPREAD_MIN * rms) {
      return `the ${axis}-normalised weights spread too little for float32 z-scores ` +
        `(std ${std.toExponential(2)}, root mean square ${rms.toExponential(2)})`;
    }
  }
  return null;
}

/** Unit roundoff of float32. */
const EPS32 = 2 ** -24;
/** The contract's ambiguity band (API.md, Selection): relative, between a score and its unit's threshold. */
const BAND = 1e-5;
/**
 * Z-Pruner near a selection threshold: how far f32 z-scores may sit from the CPU backend's f64 ones. Model: zr =
 * |W / ‖row‖ - meanR| * invStdR. Near a small threshold W / ‖row‖ is close to meanR, so the relative rounding of the
 * row norm (its f32 sum of squares, the sqrt, the division) and of the f32 mean (rowSum / ‖row‖ summed over the rows,
 * / n) each shift zr by a multiple of EPS32 * |meanR| * invStdR: alike for a whole row or the whole layer, not for
 * every entry. zc likewise with meanC and invStdC. The rest is relative to z (1 / std, the cube, alpha, m_j of the
 * activation). Where the mean is near 0 its absolute error is a cancelling sum's instead, about 1 / sqrt(n) std per
 * EPS32. So |Δz| <= Z_SHIFT * EPS32 * (|mean| / std + Z_MEAN_FLOOR / sqrt(n)) per axis, and the score's relative
 * error beyond that is at most Z_REL.
 *
 * Measured per weight against f64 z-scores, as max (|Δscore| - Z_REL score) / (3 EPS32 (α zr² mR + (1 - α) zc² mC)),
 * m = |mean| / std, on f32 layers 1 + σN(0, 1), σ 0.3, 0.5, 1 (m 3.3, 2, 1), 2048x4096, 4096x4096, 1024x16384 and
 * 16384x1024, two seeds each: lavapipe 2.6-5.0 (its row norms rounded by up to 2.2 EPS32, column norms 4.3, means
 * 1.8, plus the division's 1); lavapipe with every division and sqrt of score, centred, z_means and z_spread off by up
 * to ±2 ULP (NVIDIA divides as x * rcp(y); WGSL allows 2.5 ULP) 9.4-14.3. Zero-mean layers 0.02 N(0, 1), 64x96 to
 * 16384x1024, three seeds: beyond the factor common to the whole layer, weights the shift cannot reach were off by at
 * most 11 EPS32 relative on lavapipe (12 with it), 30 emulated (whose 1/stds add up to 23 more, alike for weights
 * whose zr and zc mix alike); the shift beyond Z_SHIFT |mean| / std took 0.19 / sqrt(n) emulated, none on lavapipe.
 * Z_SHIFT = 20 is 1.4 times the emulation's 14.3 (2.5 ULP is 1.25 times its 2) and 4 times lavapipe's worst.
 */
const Z_SHIFT = 20;
const Z_REL = 32 * EPS32;
const Z_MEAN_FLOOR = 0.25;

/**
 * The lowest threshold score (activation included) at which Z-Pruner's f32 scores keep the CPU backend's order outside
 * the band, from Z-Pruner's scalars as z_spread left them and the largest finite activation act_max; 0 when any
 * threshold does. With |Δzr| <= dR and |Δzc| <= dC, an entry whose score before its activation is s0 moves by at
 * most s0 ((1 + x)^3 - 1) with x = K / cbrt(s0), K = cbrt(α dR³ + (1 - α) dC³) (Minkowski's inequality on the
 * 3-norm), times 1 + Z_REL. An entry whose score is near a threshold T has s0 = T / act_j >= T / act_max. Two such
 * entries can swap outside the band only if their errors add up to more than BAND, so T is safe when
 * (1 + x)^3 (1 + Z_REL) <= 1 + BAND / 2 at s0 = T / act_max.
 */
export function zSafeThreshold(scalars: Float32Array, n: number, maxAct: number): number {
  if (!(maxAct > 0)) return 0; // every score is 0
  const floor = Z_MEAN_FLOOR / Math.sqrt(n);
  // A zero 1/std means z = 0 on that axis on both backends: no shift.
  const shift = (mean: number, inv: number) => (inv > 0 ? Z_SHIFT * EPS32 * (Math.abs(mean) * inv + floor) : 0);
  const dR = shift(scalars[Z_SCALARS.meanR]!, scalars[Z_SCALARS.invStdR]!);
  const dC = shift(scalars[Z_SCALARS.meanC]!, scalars[Z_SCALARS.invStdC]!);
  const alpha = scalars[Z_SCALARS.alpha]!;
  const k = Math.cbrt(alpha * dR ** 3 + (1 - alpha) * dC ** 3);
  const x = Math.cbrt((1 + BAND / 2) / (1 + Z_REL)) - 1;
  return maxAct * (k / x) ** 3;
}

/**
 * N:M selection has a threshold per group, and the engine reads none back, so this rule is a priori and statistical
 * (measured), not a bound. The shifts of zSafeThreshold swap two weights of a group outside the band when the group's
 * N-th lowest |z| is small (below about m: larger, the band absorbs the shift) and its (N+1)-th lies within the shift
 * of it: expected swaps per layer about NM_SWAP_RATE * n * m * min(1, M m)^N, m the larger |mean| / std of Wr and
 * Wc, the last factor bounding the chance of so small a threshold. Out-of-band swaps counted per layer of f32
 * 1 + σN(0, 1) with lavapipe's division and sqrt off by ±2 ULP, at m 10 / 6.7 / 3.3 / 2 / 1 (2048x4096, 4 seeds; 7
 * for 1:4, 2:4 and 4:8 at m <= 3.3): 1:8 4.5 / 2 / 0.5 / 0 / 0.5, 1:4 2.5 / 1.25 / 0.43 / 0.29 / 0, 2:4 and 4:8 at
 * most 1.75 / 0.5 / 0.14 / 0 / 0; 4096x4096 (2 seeds) 1:8 9.5 at m 10, 1.5 at 3.3 and 2: at most 6e-8 per weight per
 * unit of m. Stock lavapipe: 2:4 and 1:8 2 each in the four 2048x4096 layers at m 10, 1:4 2 and 1:8 3 in the two
 * 4096x4096; at m <= 3.3 one (1:8, 4096x4096) in 91 layers. NM_SWAP_RATE is twice the worst rate, and a layer goes
 * to the exact path where it would expect 0.01 swaps: an 8192x28672 layer keeps the GPU up to m = 0.03 for 2:4 and
 * 0.01 for 1:4 (the bundled model's trained layers have m of 1e-4 to 0.035, most below 0.01).
 */
const NM_SWAP_RATE = 1.2e-7;
const NM_SWAPS_MAX = 0.01;

/** Why Z-Pruner's f32 scores would likely swap weights of an N:M group outside the band, or null: see NM_SWAP_RATE. */
function nmSwapsLikely(scalars: Float32Array, n: number, nPruned: number, m: number): string | null {
  const mean = (meanAt: number, invAt: number) => Math.abs(scalars[meanAt]!) * scalars[invAt]!;
  const mR = mean(Z_SCALARS.meanR, Z_SCALARS.invStdR), mC = mean(Z_SCALARS.meanC, Z_SCALARS.invStdC);
  const mm = Math.max(mR, mC);
  const expected = NM_SWAP_RATE * n * mm * Math.min(1, m * mm) ** nPruned;
  if (!(expected > NM_SWAPS_MAX)) return null;
  return `float32 z-scores (means ${mR.toPrecision(2)} and ${mC.toPrecision(2)} stds from zero) would swap about ` +
    `${expected.toPrecision(2)} weights of its ${nPruned}:${m} groups outside the 1e-5 band`;
}

/** The largest finite act_j = actNormSq_j^(exponent/2) (1 without activations; 0 when none is finite and nonzero). */
function maxActivation(actNormSq: Float32Array | null, exponent: number, cols: number): number {
  if (!actNormSq) return 1;
  let max = 0;
  for (let j = 0; j < cols; j++) {
    const a = actNormSq[j]! ** (exponent / 2);
    if (a > max && a < Infinity) max = a;
  }
  return max;
}

/** Why a Z-Pruner layer whose threshold `t` (of `where`) is below zSafeThreshold's `tSafe` takes the exact path. */
function thresholdTooLow(where: string, t: number, tSafe: number, scalars: Float32Array): string {
  const m = (mean: number, inv: number) => (Math.abs(mean) * inv).toPrecision(2);
  return `${where}'s threshold score ${t.toExponential(2)} is below ${tSafe.toExponential(2)}, where float32 ` +
    `z-scores (means ${m(scalars[Z_SCALARS.meanR]!, scalars[Z_SCALARS.invStdR]!)} and ` +
    `${m(scalars[Z_SCALARS.meanC]!, scalars[Z_SCALARS.invStdC]!)} stds from zero) may leave the 1e-5 band`;
}

/**
 * Why Z-Pruner's f32 scores may select otherwise than the CPU backend's near the selection threshold (k weights pruned
 * per layer or row), or null:
 * `layer` compares select_pick's threshold with zSafeThreshold, `row` scores each row's pruned weights on the host
 * until one reaches it, N:M (no threshold read back) uses NM_SWAP_RATE.
 */
function zSelectionUnsafe(
  z: Float32Array,
  params: PruneParams,
  layer: LayerJob,
  k: number,
  layerThreshold: number,
  mask: Uint32Array,
  rowSums: Float32Array,
  colSums: Float32Array,
): string | null {
  const { rows, cols } = layer, n = rows * cols, p = params.pattern;
  if (p.kind === "nm") return nmSwapsLikely(z, n, p.n, p.m);
  if (k === 0) return null; // nothing pruned: no threshold to be near
  const tSafe = zSafeThreshold(z, n, maxActivation(layer.actNormSq, params.exponent, cols));
  if (p.kind === "layer") {
    return layerThreshold > 0 && layerThreshold < tSafe ? thresholdTooLow("the layer", layerThreshold, tSafe, z) : null;
  }
  if (!(tSafe > 0)) return null;
  const scores = new HostZScores(layer, params.exponent, rowSums, colSums, z);
  const low = lowRowThreshold(mask, rows, cols, tSafe, (i) => scores.at(i));
  return low && thresholdTooLow(`row ${low.row}`, low.threshold, tSafe, z);
}

/**
 * Z-Pruner's score of single weights on the host, in f64 from the GPU's f32 statistics (within a few float32
 * roundings of the GPU's own score, plenty for a threshold compared with zSafeThreshold).
 */
class HostZScores {
  readonly #view: DataView;
  readonly #half: number;

  constructor(
    readonly layer: LayerJob,
    exponent: number,
    readonly rowSums: Float32Array,
    readonly colSums: Float32Array,
    readonly scalars: Float32Array,
  ) {
    const w = layer.weight;
    this.#view = new DataView(w.buffer, w.byteOffset, w.byteLength);
    this.#half = exponent / 2;
  }

  /** The score of weight i (row-major). */
  at(i: number): number {
    const { cols, actNormSq } = this.layer;
    const z = this.scalars;
    const r = Math.floor(i / cols), j = i - r * cols;
    const w = decodeAt(this.#view, this.layer.dtype, i); // as the GPU decodes it (exactly)
    const nr = Math.sqrt(this.rowSums[3 * r]!), nc = Math.sqrt(this.colSums[3 * j]!);
    const zr = Math.abs(((nr > 0 ? w / nr : 0) - z[Z_SCALARS.meanR]!) * z[Z_SCALARS.invStdR]!);
    const zc = Math.abs(((nc > 0 ? w / nc : 0) - z[Z_SCALARS.meanC]!) * z[Z_SCALARS.invStdC]!);
    const alpha = z[Z_SCALARS.alpha]!;
    const s = alpha * zr ** 3 + (1 - alpha) * zc ** 3;
    return s === 0 || !actNormSq ? s : s * actNormSq[j]! ** this.#half;
  }
}

/**
 * The first row of a row-pattern mask (u32 words, LSB = lower index) whose threshold (its largest pruned score) is
 * nonzero and below `tSafe`, and that threshold; null when there is none. A row stops at its first pruned score of
 * at least `tSafe`, so on a layer that passes this costs about one score per row and the mask words before it.
 * (A threshold of 0 is safe: zero scores come from zero activations, zero on both backends.)
 */
export function lowRowThreshold(
  mask: Uint32Array,
  rows: number,
  cols: number,
  tSafe: number,
  score: (i: number) => number,
): { row: number; threshold: number } | null {
  for (let r = 0; r < rows; r++) {
    const a = r * cols, b = a + cols;
    let max = 0;
    row: for (let w = Math.floor(a / 32); w * 32 < b; w++) {
      const base = w * 32;
      let bits = mask[w]!;
      if (base < a) bits &= -1 << (a - base);
      if (b - base < 32) bits &= (1 << (b - base)) - 1;
      while (bits !== 0) {
        const low = bits & -bits;
        bits ^= low;
        const s = score(base + 31 - Math.clz32(low));
        if (s >= tSafe) {
          max = Infinity;
          break row;
        }
        if (s > max) max = s;
      }
    }
    if (max > 0 && max < tSafe) return { row: r, threshold: max };
  }
  return null;
}

/** Throws `non_finite` when decode found a NaN or infinity (`first` is its row-major index, or 0xffffffff). */
function checkFinite(layer: LayerJob, first: number): void {
  if (first === 0xffffffff) return;
  // Same wording as the CPU backend (prune/prune_layer.ts), so both answer a bad request alike.
  const r = Math.floor(first / layer.cols), c = first % layer.cols;
  throw new ZpruneError(
    "non_finite",
    `layer "${layer.name}": weight[${first}] (row ${r}, column ${c}) is NaN or infinite; replace it before pruning`,
  );
}

/** The answer for a layer with no elements: nothing to prune, nothing for the GPU to do. */
function emptyOutput(params: PruneParams): LayerOutput {
  const out: LayerOutput = {
    mask: new Uint8Array(0),
    stats: { pruned: 0, total: 0, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 },
  };
  if (params.returnWeight) out.weight = new Uint8Array(0);
  if (params.returnScore) out.score = new Float32Array(0);
  // No weights, so none small: s = 0 (small / n itself would be 0 / 0).
  if (params.method === "zpruner") out.stats.alpha = zprunerAlpha(0, 1);
  return out;
}

/** Joins byte chunks into one array of `total` bytes. */
function concat(parts: ArrayBuffer[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p), at);
    at += p.byteLength;
  }
  return out;
}

/**
 * Writes possibly unaligned bytes whose length need not be a multiple of 4: the aligned body straight from the
 * caller's view (no copy on our side), the 1-3 byte tail padded with zeros.
 */
function uploadBytes(queue: GPUQueue, buffer: GPUBuffer, bytes: Uint8Array): void {
  const body = bytes.byteLength & ~3;
  if (body > 0) queue.writeBuffer(buffer, 0, bytes as Uint8Array<ArrayBuffer>, 0, body);
  if (body < bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(body));
    queue.writeBuffer(buffer, body, tail);
  }
}
