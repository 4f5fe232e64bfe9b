/**
 * A layer's answer on the host from what the GPU read back: `non_finite` for a NaN or infinite weight, or why f32
 * could give other masks than the CPU backend's f64 (f32_safety.ts) or why the mask's counts miss the pattern's, or the
 * mask, its statistics and what the request asked for. No device is touched here.
 */
import type { LayerStats } from "../contract/api.ts";
import type { LayerJob, LayerOutput, PruneParams } from "../prune/backend.ts";
import { layerStats } from "../prune/mask_stats.ts";
import { nonFiniteWeight } from "../prune/prune_layer.ts";
import { zprunerAlpha } from "../prune/scores.ts";
import {
  alphaUnsettled,
  spreadTooSmall,
  sumsOutOfRange,
  zeroWeightsUnsettled,
  zSelectionUnsafe,
} from "./f32_safety.ts";
import { Z_SCALARS } from "./kernels/mod.ts";
import type { LayerPlan } from "./layer_plan.ts";

/** What the engine's read-back brought to the host, each part as the kernels wrote it. */
export interface ReadBack {
  /** Bit-packed mask words (u32, LSB = lower index). */
  readonly mask: ArrayBuffer;
  /** Select state: select_pick's threshold score (f32) first, select_nm's count of unsafe groups second. */
  readonly state: ArrayBuffer;
  /** [first non-finite index or 0xffffffff, subnormal flag]. */
  readonly bad: ArrayBuffer;
  /** [sumSq, sum, sumAbs] per row and per column; empty unless the method uses them. */
  readonly rowSums: Float32Array;
  readonly colSums: Float32Array;
  /** Z-Pruner's scalars (Z_SCALARS), as u32 words; null for other methods. */
  readonly zScalars: Uint32Array | null;
  /** Pruned weights and scores, a part per tile; empty unless asked for. */
  readonly weights: ArrayBuffer[];
  readonly scores: ArrayBuffer[];
}

/**
 * The layer's output from `back`, or (a string) why it must be computed on the exact path; throws `non_finite` for a
 * NaN or infinite weight. `k` is the count pruned per layer or row (0 for N:M).
 */
export function layerAnswer(plan: LayerPlan, back: ReadBack, k: number): LayerOutput | string {
  const { params, layer, n, size, statsMethod } = plan;
  const { rows, cols } = layer, { method, pattern } = params;
  const { rowSums, colSums, zScalars } = back;
  const badOut = new Uint32Array(back.bad);
  checkFinite(layer, badOut[0]!);
  let outOfRange = badOut[1] !== 0 ? "a subnormal weight or score, or a score past float32's range" : null;
  if (statsMethod !== null) { // the row and column sums came back
    outOfRange ??= sumsOutOfRange(rowSums, cols, "row", statsMethod) ??
      sumsOutOfRange(colSums, rows, "column", statsMethod);
  }
  const stateOut = new Uint32Array(back.state);
  const layerThreshold = new Float32Array(stateOut.buffer, 0, 1)[0]!; // select_pick's, for the layer pattern
  if (zScalars !== null) {
    const z = new Float32Array(zScalars.buffer);
    const nmUnsafe = plan.nmThread ? stateOut[1]! : null;
    outOfRange ??= spreadTooSmall(z, n) ?? alphaUnsettled(z, layer) ??
      zeroWeightsUnsettled(z, layer, rowSums, colSums, { rows, cols, colBlocks: plan.colBlocks }) ??
      zSelectionUnsafe(z, params, layer, k, layerThreshold, new Uint32Array(back.mask), rowSums, colSums, nmUnsafe);
  }
  // f32 statistics (or a GPU's flush of subnormals) would give other masks than the CPU backend's f64 ones. Trained
  // models' layers come near only at sparsities of a few percent or less (zSafeThreshold).
  if (outOfRange !== null) return outOfRange;
  // The read-back is this layer's own copy: kept as the answer's mask, trimmed (a copy) only to a length that is not a
  // whole number of the kernels' u32 words.
  const maskLen = Math.ceil(n / 8);
  const mask = back.mask.byteLength === maskLen
    ? new Uint8Array(back.mask)
    : new Uint8Array(back.mask, 0, maskLen).slice();
  const stats = layerStats(mask, rows, cols);
  const miscount = prunedMiscount(params.pattern, stats, k, rows, cols);
  if (miscount !== null) return miscount;
  if (pattern.kind === "layer" && k > 0) stats.threshold = layerThreshold;
  if (method === "zpruner") {
    // alpha in f64 from the exact count, as the CPU backend forms it (the kernels scored with its f32 rounding).
    stats.alpha = zprunerAlpha(zScalars![Z_SCALARS.small]!, n);
  }
  const output: LayerOutput = { mask, stats };
  if (params.returnWeight) output.weight = concat(back.weights, n * size);
  if (params.returnScore) output.score = new Float32Array(concat(back.scores, n * 4).buffer);
  return output;
}

/**
 * Why the mask's counts are not what the pattern prunes (API.md: k in the layer, k in every row, N·cols/M in every row
 * for N:M, whose groups are not counted one by one), or null. The kernels prune exactly that many by construction; a
 * kernel cut short by its driver (lavapipe ends a shader's loops after 65,535 iterations, see ROW_SELECT_MAX_COLS)
 * answers fewer, and such a mask must not leave.
 */
function prunedMiscount(
  pattern: PruneParams["pattern"],
  stats: LayerStats,
  k: number,
  rows: number,
  cols: number,
): string | null {
  const { pruned, rowSparsity } = stats;
  const want = pattern.kind === "layer" ? k : pattern.kind === "row" ? rows * k : (rows * cols / pattern.m) * pattern.n;
  // Every row the same: with the total right, each row prunes k (row) or N per group's worth (N:M).
  const even = pattern.kind === "layer" || rowSparsity.min === rowSparsity.max;
  if (pruned === want && even) return null;
  const [least, most] = [rowSparsity.min, rowSparsity.max].map((f) => Math.round(f * cols));
  const perRow = least === most ? `${least} in every row` : `${least} to ${most} a row`;
  return `the GPU's mask prunes ${pruned} weights (${perRow}) where the pattern prunes ${want}`;
}

/** Throws `non_finite` when decode found a NaN or infinity (`first` is its row-major index, or 0xffffffff). */
function checkFinite(layer: LayerJob, first: number): void {
  // The CPU backend's error, so both answer a bad request alike.
  if (first !== 0xffffffff) throw nonFiniteWeight(layer, first);
}

/** Joins byte chunks into one array of `total` bytes (a lone chunk of that length is kept, not copied). */
function concat(parts: ArrayBuffer[], total: number): Uint8Array {
  if (parts.length === 1 && parts[0]!.byteLength === total) return new Uint8Array(parts[0]!);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p), at);
    at += p.byteLength;
  }
  return out;
}
