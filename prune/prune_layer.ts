/**
 * One layer pruned on the CPU, start to finish: decode (with the finiteness check), scores, selection, mask,
 * stats. Every pass runs as `CpuOp`s over row or element ranges through an `Executor`: inline on this thread
 * (the oracle the WebGPU parity tests use, and the path for small layers) or spread over the worker pool.
 */
import { ZpruneError } from "../contract/errors.ts";
import { type Pattern, prunedCounts } from "../contract/api.ts";
import type { LayerJob, LayerOutput, PruneParams } from "./backend.ts";
import { type CpuOp, type DecodeSumsResult, runOp, type ScoreResult } from "./cpu_ops.ts";
import { applyMaskBytes } from "../contract/dtype_codec.ts";
import { BLOCK_MIN_ELEMENTS, layerBlockCount, MAX_WORK_PARTS } from "../contract/working_memory.ts";
import { markGathered } from "./select.ts";
import { layerStats } from "./mask_stats.ts";
import {
  activationWeights,
  buildContext,
  type CentredSums,
  type MatrixSums,
  mergeColumnSums,
  newSums,
  type ScoreContext,
} from "./scores.ts";

/** Runs `CpuOp`s, in parallel where it can, and collects the results in their order. */
export interface Executor {
  /** Whether arrays must live in SharedArrayBuffers (true for workers). */
  readonly shared: boolean;
  /** Threads the ops are spread over (default 1). */
  readonly threads?: number;
  /** A scratch buffer of `bytes` (contents undefined), from a free list where there is one. */
  scratch?(bytes: number): ArrayBufferLike;
  /** Returns a scratch buffer once nothing refers to it any more. */
  release?(buffer: ArrayBufferLike): void;
  /** Runs `make(i)` for i < count (null: nothing to run for i); answers the results of those that ran, in order. */
  all<T>(count: number, make: (i: number) => CpuOp | null): Promise<T[]>;
}

/** Runs every op on this thread, in order. */
const inlineExecutor: Executor = {
  shared: false,
  all<T>(count: number, make: (i: number) => CpuOp | null): Promise<T[]> {
    const out: T[] = [];
    for (let i = 0; i < count; i++) {
      const t = make(i);
      if (t) out.push(runOp(t) as T);
    }
    return Promise.resolve(out);
  },
};

/**
 * The row blocks of a rows x cols layer. They depend on the shape alone, never on the thread count: every float
 * sum is taken per block from zero and the blocks' partials are combined in block order, so the statistics, and
 * with them the scores and the mask, are the same bits inline and on any number of workers.
 */
function layerBlocks(rows: number, cols: number): number[] {
  return rowSplits(rows, cols, layerBlockCount(rows, cols));
}

/**
 * The row parts scoring and selection run in. Unlike the sums, these passes give the same bits however the rows are
 * split (scores are per element, histograms and tie counts are integers, ties are taken in index order), so they
 * are split by the executor's threads, two parts each, for balance: the shape-fixed blocks leave 24 workers with
 * one or two blocks of 32 each, and 64 workers with half of them idle.
 */
function workParts(rows: number, cols: number, threads: number): number[] {
  const parts = Math.max(
    1,
    Math.min(MAX_WORK_PARTS, 2 * threads, rows, Math.floor((rows * cols) / BLOCK_MIN_ELEMENTS)),
  );
  return rowSplits(rows, cols, parts);
}

/** Rows of part i of `splits` (the row bounds of consecutive parts), or null past the last part. */
function rowPart(splits: number[]): (i: number) => { r0: number; r1: number } | null {
  return (i) => (i < splits.length - 1 ? { r0: splits[i]!, r1: splits[i + 1]! } : null);
}

/**
 * How many weights a "layer" pattern prunes in all, or a "row" pattern in each row: floor(sparsity * count), the
 * product taken as the golden files do. 0 for N:M, whose n per group needs no count. Both backends use it.
 */
export function patternK(pattern: Pattern, rows: number, cols: number): number {
  if (pattern.kind === "nm") return 0;
  const count = pattern.kind === "layer" ? rows * cols : cols;
  // The contract's count (the product first, as the golden files take it): a "row" pattern's, of one row.
  const k = prunedCounts(pattern, pattern.kind === "row" ? 1 : rows, cols)[0]!;
  // The contract keeps sparsity below 1; a k past the count (or none at all) would have the selection look for
  // weights that are not there. Only a direct caller can pass one; both backends answer it alike (the GPU's worker
  // passes a contract code on, and stays).
  if (!(k >= 0 && k <= count)) {
    throw new ZpruneError("invalid_request", `sparsity ${pattern.sparsity} prunes ${k} of ${count} weights`);
  }
  return k;
}

/** Row boundaries splitting `rows` into `parts`, each a multiple of whole mask bytes so parts never share one. */
function rowSplits(rows: number, cols: number, parts: number): number[] {
  const step = 8 / gcd(cols, 8);
  const splits = [0];
  for (let i = 1; i < parts; i++) {
    const r = Math.floor((rows * i) / parts / step) * step;
    splits.push(Math.max(splits[i - 1]!, Math.min(r, rows)));
  }
  splits.push(rows);
  return splits;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Allocates `bytes` in a SharedArrayBuffer when workers must see it. */
function alloc(bytes: number, shared: boolean): ArrayBufferLike {
  return shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
}

/**
 * `a` in a SharedArrayBuffer when workers must see it: an op's plain arrays are copied into every task posted (all of
 * a pass's tasks at once), so a tall layer's per-row vectors were held once per row block, 32 times (measured in an
 * audit: a 16M x 4 f32 zpruner layer grew the server by 3140 MiB against its 1048 MiB estimate).
 */
function share(exec: Executor, a: Float64Array): Float64Array {
  if (!exec.shared || a.buffer instanceof SharedArrayBuffer) return a;
  const out = new Float64Array(new SharedArrayBuffer(a.byteLength));
  out.set(a);
  return out;
}

/** Scratch from the executor's free list, or freshly allocated. */
function scratch(exec: Executor, bytes: number): ArrayBufferLike {
  return exec.scratch?.(bytes) ?? alloc(bytes, exec.shared);
}

/** The `non_finite` error naming the layer, its first NaN or infinite weight `i`, and its row and column. */
export function nonFiniteWeight(layer: LayerJob, i: number): ZpruneError {
  const r = Math.floor(i / layer.cols), c = i % layer.cols;
  return new ZpruneError(
    "non_finite",
    `layer "${layer.name}": weight[${i}] (row ${r}, column ${c}) is NaN or infinite; replace it before pruning`,
  );
}

/**
 * The `non_finite` error for a score past float32's range: every such score would be stored as infinity and tie, so
 * the order the contract asks for among them is lost (as with an infinite activation, which the contract refuses).
 * Only the activation factor can take a score there: |w| is a float32, and the z-scores and RIA's quotients are
 * bounded.
 */
function scoreOverflow(layer: LayerJob, i: number, exponent: number): ZpruneError {
  const r = Math.floor(i / layer.cols), c = i % layer.cols;
  return new ZpruneError(
    "non_finite",
    `layer "${layer.name}": the score of weight[${i}] (row ${r}, column ${c}) overflows float32 with column ${c}'s ` +
      `activation factor (its sum of squared activations to the power ${exponent}/2); scale the activations (or ` +
      "weights) down, or lower options.exponent",
  );
}

/** Milliseconds per stage of one layer, for benchmarks: decode (with the sums pass), score, select, stats. */
export type StageTimes = Record<"decode" | "score" | "select" | "stats", number>;

/** Prunes one layer through `exec`; `stages`, when given, receives the time of each stage. */
export async function pruneLayerWith(
  exec: Executor,
  params: PruneParams,
  layer: LayerJob,
  signal?: AbortSignal,
  stages?: StageTimes,
): Promise<LayerOutput> {
  let t = performance.now();
  const lap = (stage: keyof StageTimes) => {
    const now = performance.now();
    if (stages) stages[stage] = now - t;
    t = now;
  };
  const { rows, cols, dtype } = layer;
  const n = rows * cols;
  const parts = layerParts(rows, cols, exec.threads ?? 1);
  // Scratch is large (W and the scores are 4 bytes a weight): it comes from the executor's free list, whose
  // pages are already mapped, and goes back at the end; nothing returned to the caller points into it.
  const buffers: ArrayBufferLike[] = [];
  const take = (bytes: number) => {
    const b = scratch(exec, bytes);
    buffers.push(b);
    return b;
  };
  try {
    let raw = layer.weight;
    if (exec.shared) {
      raw = new Uint8Array(take(raw.byteLength), 0, raw.byteLength);
      raw.set(layer.weight);
    }
    const W = new Float32Array(take(n * 4), 0, n);
    const sums = await decodeSums(exec, parts, params.method, layer, raw, W);
    signal?.throwIfAborted();
    lap("decode");
    const score = new Float32Array(take(n * 4), 0, n);
    const { ctx, hists } = await scoreLayer(exec, parts, params, layer, W, sums, score, signal);
    signal?.throwIfAborted();
    lap("score");
    const keys = new Uint32Array(score.buffer, score.byteOffset, n);
    const mask = new Uint8Array(alloc(Math.ceil(n / 8), exec.shared));
    const thresholdKey = await selectMask(exec, parts, params.pattern, layer, keys, hists, mask, take);
    lap("select");
    const ownMask = exec.shared ? mask.slice() : mask;
    const ownScore = params.returnScore && (exec.shared || exec.scratch) ? score.slice() : score;
    const out: LayerOutput = { mask: ownMask, stats: layerStats(ownMask, rows, cols) };
    if (thresholdKey >= 0) out.stats.threshold = new Float32Array(new Uint32Array([thresholdKey]).buffer)[0]!;
    if (params.method === "zpruner") out.stats.alpha = ctx.alpha;
    if (params.returnWeight) out.weight = applyMaskBytes(layer.weight, dtype, ownMask);
    if (params.returnScore) out.score = ownScore;
    lap("stats");
    return out;
  } catch (err) {
    // A layer whose worker died drops its buffers, not reusing them: killed mid-task, it may not have stopped writing
    // into them yet. Any other failure (a non-finite weight, an abort between stages, an allocation refused) comes
    // once every op posted has settled, so its buffers go back to be reused: dropped, each such request left a
    // layer's scratch to the garbage collector and had the next layer allocate and first-touch it anew.
    if (err instanceof ZpruneError && err.code === "unavailable") buffers.length = 0;
    throw err;
  } finally {
    for (const b of buffers) exec.release?.(b);
  }
}

/**
 * How a layer's rows are split among an executor's ops: `blocks` for the decode and centred passes (fixed by the
 * shape, so that sums add in the same order on any executor), `work` for scoring and selection (by its threads).
 */
interface LayerParts {
  readonly blocks: number;
  /** Row bounds of the blocks (blocks + 1 of them). */
  readonly blockSplits: number[];
  readonly block: (i: number) => { r0: number; r1: number } | null;
  readonly work: number;
  /** Row bounds of the work parts (work + 1 of them). */
  readonly workSplits: number[];
  readonly workPart: (i: number) => { r0: number; r1: number } | null;
}

/** The row splits of a rows x cols layer for an executor of `threads`. */
function layerParts(rows: number, cols: number, threads: number): LayerParts {
  const blockSplits = layerBlocks(rows, cols);
  const workSplits = workParts(rows, cols, threads);
  return {
    blocks: blockSplits.length - 1,
    block: rowPart(blockSplits),
    blockSplits,
    work: workSplits.length - 1,
    workPart: rowPart(workSplits),
    workSplits,
  };
}

/**
 * Decode into `W`, check finiteness and take the row and column sums the method uses, in one pass; throws
 * `non_finite` naming the first NaN or infinite weight.
 */
async function decodeSums(
  exec: Executor,
  parts: LayerParts,
  method: PruneParams["method"],
  layer: LayerJob,
  raw: Uint8Array,
  W: Float32Array,
): Promise<MatrixSums> {
  const { rows, cols, dtype } = layer;
  const partials = await exec.all<DecodeSumsResult>(parts.blocks, (i) => {
    const r = parts.block(i);
    return r && { op: "decodeSums", raw, dtype, W, method, cols, ...r };
  });
  const bad = partials.map((p) => p.bad).filter((b) => b >= 0);
  if (bad.length) throw nonFiniteWeight(layer, Math.min(...bad));
  const sums = newSums(rows, cols, method);
  partials.forEach((p, i) => {
    const at = parts.blockSplits[i]!;
    // Arrays the method does not use are empty (where an offset past 0 would be out of bounds).
    if (p.rowSum.length) sums.rowSum.set(p.rowSum, at);
    if (p.rowSumSq.length) sums.rowSumSq.set(p.rowSumSq, at);
    if (p.rowAbs.length) sums.rowAbs.set(p.rowAbs, at);
    mergeColumnSums(sums, p);
  });
  return sums;
}

/**
 * The method's statistics (Z-Pruner's centred pass included) and every weight's score into `score`, with each work
 * part's histogram of key tops for the layer pattern; throws `non_finite` for the first score past float32.
 */
async function scoreLayer(
  exec: Executor,
  parts: LayerParts,
  params: PruneParams,
  layer: LayerJob,
  W: Float32Array,
  sums: MatrixSums,
  score: Float32Array,
  signal?: AbortSignal,
): Promise<{ ctx: ScoreContext; hists: (Uint32Array | null)[] }> {
  const { rows, cols } = layer;
  const act = activationWeights(layer.actNormSq, params.exponent);
  const ctx = await buildContext(
    params.method,
    rows,
    cols,
    sums,
    act,
    async (rowInv, colInv, meanR, meanC, smallBelow) => {
      const invRow = share(exec, rowInv), invCol = share(exec, colInv);
      const rs = await exec.all<CentredSums>(parts.blocks, (i) => {
        const r = parts.block(i);
        return r && { op: "centred", W, cols, invRow, invCol, meanR, meanC, smallBelow, ...r };
      });
      return rs.reduce((a, b) => ({
        ssR: a.ssR + b.ssR,
        ssC: a.ssC + b.ssC,
        dR: a.dR + b.dR,
        dC: a.dC + b.dC,
        small: a.small + b.small,
      }));
    },
  );
  signal?.throwIfAborted();
  const hist = params.pattern.kind === "layer";
  const shared: ScoreContext = {
    ...ctx,
    act: ctx.act && share(exec, ctx.act),
    invRow: share(exec, ctx.invRow),
    invCol: share(exec, ctx.invCol),
    invRowAbs: ctx.invRowAbs && share(exec, ctx.invRowAbs),
    invColAbs: ctx.invColAbs && share(exec, ctx.invColAbs),
  };
  const scored = await exec.all<ScoreResult>(parts.work, (i) => {
    const r = parts.workPart(i);
    return r && { op: "score", W, ctx: shared, out: score, hist, ...r };
  });
  const over = scored.map((p) => p.over).filter((i) => i >= 0);
  if (over.length) throw scoreOverflow(layer, Math.min(...over), params.exponent);
  return { ctx, hists: scored.map((p) => p.hist) };
}

/** Marks the pruned weights in `mask` for the pattern; answers the layer pattern's threshold key, else -1. */
async function selectMask(
  exec: Executor,
  parts: LayerParts,
  pattern: Pattern,
  layer: LayerJob,
  keys: Uint32Array,
  hists: (Uint32Array | null)[],
  mask: Uint8Array,
  take: (bytes: number) => ArrayBufferLike,
): Promise<number> {
  const { rows, cols } = layer;
  if (pattern.kind === "layer") {
    const bounds = parts.workSplits.map((r) => r * cols);
    const k = patternK(pattern, rows, cols);
    return await selectLayerWith(exec, keys, k, hists as Uint32Array[], mask, bounds, take);
  }
  if (pattern.kind === "row") {
    const k = patternK(pattern, rows, cols);
    if (k > 0) {
      await exec.all(parts.work, (i) => {
        const r = parts.workPart(i);
        return r && { op: "rows", keys, cols, k, mask, ...r };
      });
    }
  } else {
    const { n, m } = pattern;
    await exec.all(parts.work, (i) => {
      const r = parts.workPart(i);
      return r && { op: "nm", keys, cols, n, m, mask, ...r };
    });
  }
  return -1;
}

/**
 * Most keys in the threshold's top-16-bit bucket for the layer select to gather them (8 MiB of pairs), rather than
 * take a pass over the layer for the threshold's low 16 bits and then its ties. The bench's layers hold about 0.07% of
 * their keys there (11765 of 4096x4096); a bucket past this limit (many equal or close scores) would take that much
 * more scratch and be finished on the calling thread, one pair at a time.
 */
export const GATHER_MAX = 1 << 20;

/**
 * Layer-wide radix select across parts, marking the k lowest of `keys` in a zeroed `mask`: the top-16-bit histograms
 * (one per part of `bounds`) came with the scores, and give the threshold's top bucket and how many keys lie in it.
 * A bucket of at most `gatherMax` keys is gathered in the pass that marks every key below it, and the threshold and
 * its ties are found among those alone. A larger one takes a pass for the low 16 bits of the threshold; then every
 * part marks keys below it and counts its ties, and the ties needed are taken from the parts in index order. `take`
 * gives scratch (shared where the executor's is) that the caller releases. Returns the threshold key, or -1 when k = 0.
 */
export async function selectLayerWith(
  exec: Executor,
  keys: Uint32Array,
  k: number,
  hists: Uint32Array[],
  mask: Uint8Array,
  bounds: number[],
  take: (bytes: number) => ArrayBufferLike,
  gatherMax = GATHER_MAX,
): Promise<number> {
  if (k <= 0) return -1;
  const parts = bounds.length - 1;
  const erange = (i: number) => (i < parts ? { e0: bounds[i]!, e1: bounds[i + 1]! } : null);
  const pick = (hs: Uint32Array[], need: number) => {
    let d = 0, below = 0;
    for (;; d++) {
      let c = 0;
      for (const h of hs) c += h[d]!;
      if (c >= need) return { d, below };
      need -= c;
      below += c;
    }
  };
  const top = pick(hists, k);
  const inBucket = hists.map((h) => h[top.d]!);
  const bucket = inBucket.reduce((a, b) => a + b, 0);
  if (bucket <= gatherMax) {
    // Each part writes its pairs from the count of the parts before it, so the pairs lie in index order.
    const at = inBucket.map((_, i) => inBucket.slice(0, i).reduce((a, b) => a + b, 0));
    // A power of two of bytes, so that layers whose buckets differ a little reuse one kept buffer.
    const out = new Uint32Array(take(2 ** Math.ceil(Math.log2(Math.max(4096, 8 * bucket)))), 0, 2 * bucket);
    await exec.all(parts, (i) => {
      const r = erange(i);
      return r && { op: "markGather", keys, top: top.d, mask, out, at: at[i]!, ...r };
    });
    return markGathered(out, bucket, top.d, k - top.below, mask);
  }
  const lows = await exec.all<Uint32Array>(parts, (i) => {
    const r = erange(i);
    return r && { op: "histLow", keys, top: top.d, ...r };
  });
  const low = pick(lows, k - top.below);
  const t = ((top.d << 16) | low.d) >>> 0;
  const below = top.below + low.below;
  const ties = await exec.all<number>(parts, (i) => {
    const r = erange(i);
    return r && { op: "markBelow", keys, t, mask, ...r };
  });
  let quota = k - below;
  const quotas = ties.map((c) => {
    const q = Math.min(c, quota);
    quota -= q;
    return q;
  });
  await exec.all(parts, (i) => {
    const r = erange(i);
    return r && quotas[i]! > 0 ? { op: "markTies", keys, t, quota: quotas[i]!, mask, ...r } : null;
  });
  return t;
}

/** Prunes one layer on this thread: the reference the other backends are tested against. */
export function pruneLayer(params: PruneParams, layer: LayerJob): Promise<LayerOutput> {
  return pruneLayerWith(inlineExecutor, params, layer);
}
