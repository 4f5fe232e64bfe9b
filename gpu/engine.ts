/**
 * The WebGPU pruning engine: one device, its compiled pipelines and buffer pool, `prune()` for one layer and
 * `pruneGroup()` for several whose read-backs share one wait.
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
 * The plan (tiles, sizes, or why the layer takes the exact path) is `layer_plan.ts`; the host's answer from the
 * read-back, with its f32 checks, is `layer_answer.ts`. This module records and submits the GPU work between them.
 */
import { ZpruneError } from "../contract/errors.ts";
import { type DType, DTYPE_BYTES } from "../contract/api.ts";
import type { LayerJob, LayerOutput, PruneParams } from "../prune/backend.ts";
import { patternK, pruneLayer } from "../prune/prune_layer.ts";
import { BufferPool } from "./buffer_pool.ts";
import { preferVulkan } from "./driver_lifetime.ts";
import { activationCubeRoots, splitActivations, zSpreadModel } from "./f32_safety.ts";
import { GpuOutOfMemory, Job, mapStaged, type StagedRead, type StageRecorder, type StageTimes } from "./_job.ts";
import { flattenWorkgroups, kernelCode, type KernelDef, packUniforms } from "./kernel.ts";
import { layerAnswer, type ReadBack } from "./layer_answer.ts";
import { CENTRED_PART_BYTES, type LayerPlan, planLayer, planTiles, type Tile } from "./layer_plan.ts";
import { uploadBytes } from "./upload_bytes.ts";
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
  Z_SCALARS_BYTES,
  zMeans,
  zSpread,
} from "./kernels/mod.ts";

export type { StageTimes } from "./_job.ts";

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
}

/** Idle bytes the buffer pool may keep: enough for the largest layers' buffers to be reused. */
const POOL_BYTES = 2 ** 31;

const DTYPE_CODE: Record<DType, number> = { f32: 0, f16: 1, bf16: 2 };
const METHOD_CODE = { magnitude: 0, wanda: 1, ria: 2, zpruner: 3 } as const;

const STORAGE = GPUBufferUsage.STORAGE;
const COPY_SRC = GPUBufferUsage.COPY_SRC;
const COPY_DST = GPUBufferUsage.COPY_DST;

/**
 * Digits of the layer-wide radix select, most significant first: [shift, width]. Three passes over the 32-bit keys
 * (one full read fewer than four 8-bit digits); 2^11 bins is what two histogram copies fit in 16 KiB of workgroup
 * storage. Must match MAX_BINS in select_hist.wgsl and select_pick.wgsl.
 */
export const LAYER_DIGITS: readonly (readonly [shift: number, bits: number])[] = [[21, 11], [10, 11], [0, 10]];
/** Histogram bins per pass in the global histogram buffer (the widest digit). */
export const HIST_BINS = 2048;

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

/** A WebGPU device with cached pipelines and pooled buffers that prunes one layer, or one group, at a time. */
export class GpuEngine {
  readonly device: GPUDevice;
  /** The adapter's description. */
  readonly description: string;
  readonly isFallback: boolean;
  /** Set once the device is lost; the engine is then unusable. */
  lost: string | null = null;
  /**
   * Layers computed on the CPU: f32 statistics could not match the CPU backend's (see f32_safety.ts), or the layer
   * does not fit this device's storage bindings or free memory.
   */
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
  /** What `upload` made here: resident weights are read with this engine's tile plan, so only these can be used. */
  readonly #uploads = new WeakSet<ResidentWeights>();
  /** The storage-binding limit in force (the device's, or less by `maxBindingBytes`). */
  readonly #bindingBytes: number;
  readonly #timestamps: boolean;
  #dummy: GPUBuffer | null = null;

  private constructor(device: GPUDevice, info: GPUAdapterInfo, fallback: boolean, opts: EngineOptions) {
    this.device = device;
    this.description = describe(info);
    this.isFallback = fallback;
    this.#pool = new BufferPool(device, POOL_BYTES);
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
    // A pipeline the driver fails to build is an internal error (invalid WGSL a validation one): caught here, the
    // backend fails to start (auto then serves on the CPU) instead of failing every later job on it.
    this.device.pushErrorScope("internal");
    this.device.pushErrorScope("validation");
    for (const k of KERNELS) this.#pipeline(k);
    const validation = await this.device.popErrorScope();
    const err = (await this.device.popErrorScope()) ?? validation;
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
      throw jobError(e);
    } finally {
      job.finish();
    }
  }

  /**
   * Prunes several layers of one request (one call at a time per engine, as `prune()`), their read-backs mapped in one
   * await: Deno's `mapAsync` waits about 10 ms per await however many maps it covers (docs/GPU.md), which is most of a
   * small layer's time. Each layer is recorded and submitted as a job of its own (its own error scopes and buffers),
   * so what fails is that layer's answer alone: each entry is the layer's output or its error (`ExactPathNeeded`
   * with `exactElsewhere`). A layer that runs out of device memory is tried again alone, by `prune()`, once the others
   * have given their buffers back. The device holds every layer's buffers at once: the caller bounds the group
   * (`layerGroups` of prune/run_layers.ts).
   */
  async pruneGroup(params: PruneParams, layers: readonly LayerJob[]): Promise<(LayerOutput | Error)[]> {
    if (layers.length === 1) return [await settled(this.prune(params, layers[0]!).then((r) => r.output))];
    const out: (LayerOutput | Error | null)[] = layers.map(() => null);
    const recorded: { i: number; job: Job; rec: Recorded }[] = [];
    const alone: number[] = [];
    for (const [i, layer] of layers.entries()) {
      if (this.lost) {
        out[i] = new ZpruneError("unavailable", `WebGPU device lost: ${this.lost}`);
        continue;
      }
      const job = new Job(this.device, this.#pool, { profile: false, timestamps: false });
      try {
        const rec = await this.#record(job, params, layer);
        if (typeof rec !== "string") {
          recorded.push({ i, job, rec });
          continue;
        }
        job.finish();
        out[i] = await settled(this.#exact(params, layer, rec));
      } catch (e) {
        await job.abandon();
        job.finish();
        if (e instanceof GpuOutOfMemory) {
          this.outOfMemory++;
          alone.push(i);
        } else out[i] = jobError(e);
      }
    }
    let backs: (ArrayBuffer[] | Error)[];
    try {
      backs = await mapStaged(this.device, recorded.map((r) => r.rec.staged));
    } catch (e) {
      // Not a map's failure (each of those is its layer's) but the device's, with every layer's buffers suspect.
      for (const r of recorded) r.rec.staged.failed();
      const err = jobError(e);
      backs = recorded.map(() => err);
    }
    for (const [j, { i, job, rec }] of recorded.entries()) {
      const back = backs[j]!;
      job.finish(); // the read-back is on the host (or failed): the layer's buffers can go back to the pool
      if (back instanceof GpuOutOfMemory) {
        this.outOfMemory++;
        alone.push(i);
      } else if (back instanceof Error) out[i] = back;
      else out[i] = await settled(this.#answer(params, layers[i]!, rec, back));
    }
    for (const i of alone.sort((a, b) => a - b)) {
      out[i] = await settled(this.prune(params, layers[i]!).then((r) => r.output));
    }
    return out as (LayerOutput | Error)[];
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
    const resident = { rows, cols, dtype, buffers, destroy: () => buffers.forEach((b) => b.destroy()) };
    this.#uploads.add(resident);
    return resident;
  }

  /**
   * Throws a TypeError unless `resident` is `layer`'s upload on this engine: a caller's bug, so thrown before any job,
   * whose errors would become a retryable `unavailable`.
   */
  #checkResident(layer: LayerJob, resident: ResidentWeights): void {
    const { rows, cols, dtype, name } = layer;
    // The same shape and dtype give the same tile plan on this engine; another engine may split rows otherwise.
    if (resident.rows !== rows || resident.cols !== cols || resident.dtype !== dtype) {
      throw new TypeError(
        `resident weights are ${resident.rows}x${resident.cols} ${resident.dtype}, not layer ${name}'s`,
      );
    }
    if (!this.#uploads.has(resident)) {
      throw new TypeError(`resident weights for layer ${name} were not uploaded by this engine`);
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

  /** One layer on the GPU, stage by stage as in the header, then read back and checked against f32's limits. */
  async #run(job: Job, params: PruneParams, layer: LayerJob, resident?: ResidentWeights): Promise<LayerOutput> {
    const rec = await this.#record(job, params, layer, resident);
    if (typeof rec === "string") return this.#exact(params, layer, rec, resident);
    const [back] = await mapStaged(this.device, [rec.staged]);
    if (back instanceof Error) throw back;
    return this.#answer(params, layer, rec, back!, resident);
  }

  /**
   * Records and submits one layer's stages and its read-back (`Recorded`), or says (a string) why it takes the exact
   * path without the GPU.
   */
  async #record(
    job: Job,
    params: PruneParams,
    layer: LayerJob,
    resident?: ResidentWeights,
  ): Promise<Recorded | string> {
    const plan = planLayer(params, layer, { tileBytes: this.#tileBytes, bindingBytes: this.#bindingBytes });
    if (typeof plan === "string") return plan;
    const { bad, raw, ws } = await this.#decode(job, plan, resident);
    const { rowSt, colSt } = await this.#stats(job, plan, ws);
    const scalars = await this.#centred(job, plan, ws, rowSt, colSt);
    await this.#score(job, plan, rowSt, colSt, scalars, ws, bad);
    const { mask, state, k } = await this.#select(job, plan, ws, raw, scalars);
    const outs = await this.#apply(job, plan, raw, mask);
    const { wanted, sizes } = readBackList(plan, { mask, state, bad, rowSt, colSt, scalars, outs, ws });
    return { plan, k, staged: await job.stageRead(wanted, sizes), trace: (e) => job.traceEvent(e) };
  }

  /** The layer's output from its mapped read-back, or its exact path's where f32 could give other masks. */
  async #answer(
    params: PruneParams,
    layer: LayerJob,
    rec: Recorded,
    back: ArrayBuffer[],
    resident?: ResidentWeights,
  ): Promise<LayerOutput> {
    const answer = layerAnswer(rec.plan, parseReadBack(rec.plan, back), rec.k);
    rec.trace(typeof answer === "string" ? `exact path: ${answer}` : "answered");
    // A string: f32 statistics (or a GPU's flush of subnormals) could give other masks than the CPU backend's f64
    // ones, so the layer is computed exactly, on the CPU (here, or handed back: see #exact).
    return typeof answer === "string" ? await this.#exact(params, layer, answer, resident) : answer;
  }

  /** decode: uploads each tile's bytes (unless resident), widens them to f32, finds the first non-finite weight. */
  async #decode(
    job: Job,
    plan: LayerPlan,
    resident?: ResidentWeights,
  ): Promise<{ bad: GPUBuffer; raw: GPUBuffer[]; ws: GPUBuffer[] }> {
    const { layer, tiles, size } = plan;
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
          dtype: DTYPE_CODE[layer.dtype],
          base: t.base,
        });
      }
    });
    return { bad, raw, ws };
  }

  /** stats: row sums and 2-level column sums for the methods that use them (the unused-stats buffer for others). */
  async #stats(job: Job, plan: LayerPlan, ws: GPUBuffer[]): Promise<{ rowSt: GPUBuffer; colSt: GPUBuffer }> {
    const { layer: { rows, cols }, tiles, colBlocks } = plan;
    let rowSt = this.#dummyBuffer(), colSt = this.#dummyBuffer();
    if (plan.statsMethod !== null) {
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
    return { rowSt, colSt };
  }

  /**
   * centred: Z-Pruner's whole-matrix scalars, reduced on the GPU (z_means after the sums, z_spread after the centred
   * pass) so that no method needs the host before the final read-back; a bad weight is reported from that read. The
   * unused-stats buffer for other methods.
   */
  async #centred(job: Job, plan: LayerPlan, ws: GPUBuffer[], rowSt: GPUBuffer, colSt: GPUBuffer): Promise<GPUBuffer> {
    const { layer: { rows, cols }, n, tiles, centredWgs } = plan;
    let scalars = this.#dummyBuffer();
    if (plan.params.method === "zpruner") {
      scalars = job.buffer(Z_SCALARS_BYTES, STORAGE | COPY_SRC, "z-scalars");
      const part = job.buffer(centredWgs * CENTRED_PART_BYTES, STORAGE, "centred-partials");
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
        this.#dispatch(job, rec, zSpread, [part, scalars], {
          count: centredWgs,
          n,
          ...zSpreadModel(n),
        });
      });
    }
    return scalars;
  }

  /** score: each tile's weights to their scores, in place (`ws`); flags a subnormal score in `bad`. */
  async #score(
    job: Job,
    plan: LayerPlan,
    rowSt: GPUBuffer,
    colSt: GPUBuffer,
    scalars: GPUBuffer,
    ws: GPUBuffer[],
    bad: GPUBuffer,
  ): Promise<void> {
    const { params, layer, tiles } = plan;
    const { cols } = layer, { method } = params;
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
  }

  /**
   * select: the bit-packed mask, and the select state (its first word select_pick's threshold, for the layer
   * pattern; its second select_nm's count of unsafe groups, for Z-Pruner's N:M); `k` is the count pruned per layer or
   * row (0 for N:M).
   */
  async #select(
    job: Job,
    plan: LayerPlan,
    ws: GPUBuffer[],
    raw: GPUBuffer[],
    scalars: GPUBuffer,
  ): Promise<{ mask: GPUBuffer; state: GPUBuffer; k: number }> {
    const { layer: { rows, cols, name }, params: { pattern }, maskBytes } = plan;
    const mask = job.buffer(maskBytes, STORAGE | COPY_SRC | COPY_DST, "mask");
    const state = job.buffer(16, STORAGE | COPY_SRC | COPY_DST, "select-state");
    const k = patternK(pattern, rows, cols);
    if (pattern.kind === "nm" && cols % pattern.m !== 0) {
      throw new ZpruneError("shape_mismatch", `layer ${name}: cols ${cols} is not a multiple of M = ${pattern.m}`);
    }
    job.encoder.clearBuffer(mask, 0, mask.size);
    let record: ((rec: StageRecorder) => void) | null = null; // null: nothing to prune (k = 0), an empty stage
    if (pattern.kind === "layer") {
      if (k > 0) record = this.#selectLayer(job, plan, ws, mask, state, k);
    } else if (pattern.kind === "row") {
      if (k > 0) record = (rec) => this.#selectRows(job, rec, plan.tiles, ws, mask, cols, k);
    } else if (!plan.nmThread) {
      // A group of M consecutive keys is a row of M columns: per-row selection of the N lowest, a workgroup each,
      // instead of one thread ranking M keys against M (M^2 work in one thread).
      const { m, n } = pattern;
      const groups = plan.tiles.map((t) => ({ ...t, rows: t.count / m }));
      record = (rec) => this.#selectRows(job, rec, groups, ws, mask, m, n);
    } else {
      record = this.#selectNm(job, plan, pattern, ws, raw, scalars, mask, state);
    }
    await job.stage("select", (rec) => record?.(rec));
    return { mask, state, k };
  }

  /**
   * Prepares the layer pattern's select and returns its recording: three radix passes over the score bits find the
   * k-th lowest key (select_pick writes it to `state`), then ties at that key are counted per block and scanned so that
   * the lowest indices among them are pruned, and mask_layer writes the mask.
   */
  #selectLayer(
    job: Job,
    plan: LayerPlan,
    ws: GPUBuffer[],
    mask: GPUBuffer,
    state: GPUBuffer,
    k: number,
  ): (rec: StageRecorder) => void {
    const { tiles, keyBlocks } = plan;
    const hist = job.buffer(LAYER_DIGITS.length * HIST_BINS * 4, STORAGE | COPY_DST, "select-histograms");
    job.encoder.clearBuffer(hist, 0, hist.size);
    this.device.queue.writeBuffer(state, 0, new Uint32Array([0, k, 0, 0]));
    const ties = job.buffer(keyBlocks * 4, STORAGE, "tie-counts");
    return (rec) => {
      LAYER_DIGITS.forEach(([shift, bits], p) => {
        const bins = 1 << bits;
        const hiMask = shift + bits >= 32 ? 0 : (~((1 << (shift + bits)) - 1)) >>> 0;
        for (const t of tiles) {
          this.#dispatch(job, rec, selectHist, [ws[t.index]!, state, hist], {
            count: t.count,
            shift,
            hi_mask: hiMask,
            pass_index: p,
            bins,
          });
        }
        this.#dispatch(job, rec, selectPick, [hist, state], { pass_index: p, shift, bins });
      });
      for (const t of tiles) {
        this.#dispatch(job, rec, tieCount, [ws[t.index]!, state, ties], { count: t.count, block0: t.keyBlock0 });
      }
      this.#dispatch(job, rec, tieScan, [state, ties], { blocks: keyBlocks });
      for (const t of tiles) {
        this.#dispatch(job, rec, maskLayer, [ws[t.index]!, state, ties, mask], {
          count: t.count,
          base: t.base,
          block0: t.keyBlock0,
        });
      }
    };
  }

  /** Records select_row over each tile's `rows` rows of `cols` keys: the `k` lowest of each row, a workgroup each. */
  #selectRows(
    job: Job,
    rec: StageRecorder,
    tiles: readonly Pick<Tile, "index" | "rows" | "base">[],
    ws: GPUBuffer[],
    mask: GPUBuffer,
    cols: number,
    k: number,
  ): void {
    for (const t of tiles) {
      this.#dispatch(job, rec, selectRow, [ws[t.index]!, mask], { rows: t.rows, cols, base: t.base, k });
    }
  }

  /**
   * Prepares N:M up to NM_THREAD_MAX_M and returns its recording: select_nm ranks each group's keys in one thread; for
   * Z-Pruner it also counts the groups whose choice f32 scores could have changed (the cube roots of the activations
   * bound the error).
   */
  #selectNm(
    job: Job,
    plan: LayerPlan,
    pattern: { n: number; m: number },
    ws: GPUBuffer[],
    raw: GPUBuffer[],
    scalars: GPUBuffer,
    mask: GPUBuffer,
    state: GPUBuffer,
  ): (rec: StageRecorder) => void {
    const { layer: { cols, dtype, actNormSq }, params: { method, exponent }, tiles } = plan;
    const check = method === "zpruner";
    this.device.queue.writeBuffer(state, 0, new Uint32Array(4));
    let cbrtAct = this.#dummyBuffer();
    if (check) {
      cbrtAct = job.buffer(cols * 4, STORAGE | COPY_DST, "act-cube-roots");
      this.device.queue.writeBuffer(cbrtAct, 0, activationCubeRoots(actNormSq, exponent, cols));
    }
    return (rec) => {
      for (const t of tiles) {
        this.#dispatch(job, rec, selectNm, [ws[t.index]!, scalars, cbrtAct, raw[t.index]!, mask, state], {
          groups: t.count / pattern.m,
          m: pattern.m,
          n: pattern.n,
          base: t.base,
          cols,
          check: check ? 1 : 0,
          dtype: DTYPE_CODE[dtype],
        });
      }
    };
  }

  /** apply (when the request wants the weights): each tile's pruned weights in the request's dtype. */
  async #apply(job: Job, plan: LayerPlan, raw: GPUBuffer[], mask: GPUBuffer): Promise<GPUBuffer[]> {
    const { layer: { dtype }, tiles, size } = plan;
    const outs: GPUBuffer[] = [];
    if (plan.params.returnWeight) {
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
    return outs;
  }
}

/** A layer recorded and submitted (`GpuEngine.#record`): its plan, its count to prune, its staged read-back. */
interface Recorded {
  plan: LayerPlan;
  k: number;
  staged: StagedRead;
  trace: (event: string) => void;
}

/** The buffers a layer's read-back may copy (those the method and request use are read). */
interface LayerBuffers {
  mask: GPUBuffer;
  state: GPUBuffer;
  bad: GPUBuffer;
  rowSt: GPUBuffer;
  colSt: GPUBuffer;
  scalars: GPUBuffer;
  outs: GPUBuffer[];
  ws: GPUBuffer[];
}

/**
 * What the host needs back, in one read-back: mask, threshold state, bad weights, row and column sums, Z-Pruner's
 * scalars, weights and scores per tile (those the method and request use); `parseReadBack` names them again.
 */
function readBackList(plan: LayerPlan, bufs: LayerBuffers): { wanted: GPUBuffer[]; sizes: number[] } {
  const { params, layer: { rows, cols }, tiles, size, maskBytes, statsMethod } = plan;
  const wanted: GPUBuffer[] = [bufs.mask, bufs.state, bufs.bad];
  const sizes: number[] = [maskBytes, 8, 8];
  if (statsMethod !== null) {
    wanted.push(bufs.rowSt, bufs.colSt);
    sizes.push(rows * 12, cols * 12);
  }
  if (params.method === "zpruner") {
    wanted.push(bufs.scalars);
    sizes.push(Z_SCALARS_BYTES);
  }
  if (params.returnWeight) {
    for (const t of tiles) {
      wanted.push(bufs.outs[t.index]!);
      sizes.push(t.count * size);
    }
  }
  if (params.returnScore) {
    for (const t of tiles) {
      wanted.push(bufs.ws[t.index]!);
      sizes.push(t.count * 4);
    }
  }
  return { wanted, sizes };
}

/** The parts of a read-back of `readBackList(plan, ...)`, named. */
function parseReadBack(plan: LayerPlan, back: ArrayBuffer[]): ReadBack {
  const { params, tiles, statsMethod } = plan;
  let at = 3;
  let rowSums = new Float32Array(0), colSums = new Float32Array(0);
  if (statsMethod !== null) {
    rowSums = new Float32Array(back[at++]!);
    colSums = new Float32Array(back[at++]!);
  }
  const zScalars = params.method === "zpruner" ? new Uint32Array(back[at++]!) : null;
  const weights = params.returnWeight ? back.slice(at, at += tiles.length) : [];
  const scores = params.returnScore ? back.slice(at, at += tiles.length) : [];
  return { mask: back[0]!, state: back[1]!, bad: back[2]!, rowSums, colSums, zScalars, weights, scores };
}

/** A job's failure as `prune()` throws it: its own errors as they are, anything else `unavailable`. */
function jobError(e: unknown): Error {
  if (e instanceof ZpruneError || e instanceof ExactPathNeeded) return e;
  return new ZpruneError("unavailable", `WebGPU failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/** The output, or the error `work` failed with (as `jobError` gives it). */
function settled(work: Promise<LayerOutput>): Promise<LayerOutput | Error> {
  return work.catch(jobError);
}
