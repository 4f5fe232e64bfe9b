/**
 * Whether the GPU's float32 arithmetic can stand in for the CPU backend's float64 on one layer, decided from what the
 * engine reads back (row and column sums, Z-Pruner's scalars, the mask, select_pick's threshold). The contract lets
 * the backends' masks differ only inside its 1e-5 ambiguity band (API.md, Selection); where f32 sums leave float32's
 * range, a GPU may flush subnormals, or Z-Pruner's z-scores lose too many bits near the selection threshold, they
 * could differ outside it. Each check says why, and the engine then answers the layer on the exact CPU path.
 * `splitActivations` is here too: score.wgsl takes each activation as a float32 mantissa and an integer exponent, so
 * that an activation beyond float32's range still gives a score within it.
 */
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { AMBIGUITY_BAND, DTYPE_BYTES } from "../contract/api.ts";
import { decodeAt, decodeInto } from "../contract/dtype_codec.ts";
import { smallWeightBound } from "../prune/scores.ts";
import { Z_SCALARS } from "./kernels/z_means.ts";

/**
 * act_j = actNormSq_j^(exponent/2) in f64 (all ones without activations), as `score.wgsl` takes it: per column the
 * f32 bits of m_j and the i32 e_j with act_j = m_j * 2^e_j, m_j in [1, 2] after rounding to f32 (0 and infinity
 * keep e_j = 0). A large exponent takes act far outside f32's range where the score itself may not be.
 */
export function splitActivations(
  actNormSq: Float32Array | Float64Array | null,
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
 * cbrt(act_j) = actNormSq_j^(exponent/6) in f64 (1 without activations) as f32, for select_nm.wgsl's bound: an
 * entry's score error scales with the cube root of its activation. Past f32's range it is infinity, and the groups
 * with it are counted unsafe.
 */
export function activationCubeRoots(
  actNormSq: Float32Array | Float64Array | null,
  exponent: number,
  cols: number,
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(cols);
  for (let j = 0; j < cols; j++) out[j] = actNormSq ? actNormSq[j]! ** (exponent / 6) : 1;
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
export function spreadTooSmall(scalars: Float32Array, n: number): string | null {
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
export const EPS32 = 2 ** -24;
/** The contract's ambiguity band (API.md, Selection): relative, between a score and its unit's threshold. */
const BAND = AMBIGUITY_BAND;
/**
 * Z-Pruner near a selection threshold: how far f32 z-scores may sit from the CPU backend's f64 ones. Model: zr =
 * |W / ‖row‖ - meanR| * invStdR. Near a small threshold W / ‖row‖ is close to meanR, so the relative rounding of the
 * row norm (its f32 sum of squares, inverseSqrt, the product) and of the f32 mean (rowSum / ‖row‖ summed over the rows,
 * / n) each shift zr by a multiple of EPS32 * |meanR| * invStdR: alike for a whole row or the whole layer, not for
 * every entry. zc likewise with meanC and invStdC. The rest is relative to z (1 / std, the cube, alpha, m_j of the
 * activation). Where the mean is near 0 its absolute error is a cancelling sum's instead, about 1 / sqrt(n) std per
 * EPS32. So |Δz| <= Z_SHIFT * EPS32 * (|mean| / std + Z_MEAN_FLOOR / sqrt(n)) per axis, and the score's relative
 * error beyond that is at most Z_REL.
 *
 * Measured per weight against f64 z-scores on f32 layers 1 + σN(0, 1), σ 0.3, 0.5, 1 (m = |mean| / std 3.3, 2, 1),
 * 2048x4096 and 16384x1024, two seeds each, and zero-mean layers 0.02 N(0, 1), 64x96 to 16384x1024, three seeds, the
 * factor common to a whole layer (the 1/stds' rounding) taken out: it cannot change an order. The kernels normalise as
 * W * inverseSqrt(Σw²), which WGSL allows 2 ULP (W / sqrt(Σw²) adds a 2.5 ULP division to sqrt's 1.0 / inverseSqrt).
 * How the constants were set (2026-11-29, lavapipe, a harness in /tmp that kept no raw outputs, each division's 1/y
 * moved by up to ±3 ULP hashed per divisor and each inverseSqrt by ±2, or ±3): the shift fitted at 10.0 (12.0), the
 * relative error at 18.2 (22.0) 2⁻²⁴; Z_SHIFT and Z_REL are 1.4 times those, 17 and 31. Beside 31 a floor of 0.1 left a
 * zero-mean 4096x1024 layer outside the model by 1.43 times, so the floor is 0.5. (With W / sqrt and ±5 ULP for sqrt,
 * the layers needed 23.0, 41.8 and 0.49, and the constants were 32, 60 and 0.7.)
 * What the repository's tools measure with them (2026-11-30, lavapipe, bench/results/2026-11-30-lavapipe-z-fit/):
 * bench/z_error_fit.ts gives the worst weight's distance over its bound (above (z + d)³ or below (z - d)³, as
 * select_nm.wgsl checks) and each constant's least value that keeps every weight inside with the other two as they
 * are; bench/z_error_emulate.ts runs it with each quotient and inverseSqrt moved by whole ULPs of itself, hashed per
 * input or of one sign, WGSL's least accurate. Over nine such settings up to ±3 and ±3, every weight stayed within
 * 0.730 of its bound, and the fits were at most 12.39 for Z_SHIFT, 21.9 2⁻²⁴ for Z_REL and 0.230 for Z_MEAN_FLOOR: the
 * constants are 1.37, 1.42 and 2.2 times those. lavapipe's own arithmetic: 0.362, and fits of 5.65, 11.2 and 0.113.
 * On the bundled model's 42 layers through a WebGPU server (2026-11-29), layer sparsity 0.01 sends 8 to the exact
 * path (41 with the old form and constants), row 0.05 none (32), layer 0.003 35 (42), row 0.01 40 (42); 0.1, 0.5,
 * row 0.5 and N:M none, as before.
 */
export const Z_SHIFT = 17;
export const Z_REL = 31 * EPS32;
export const Z_MEAN_FLOOR = 0.5;

/**
 * A layer's shape, all the sums' chains need of it; `colBlocks`, the column partials col_stats.wgsl writes (the
 * engine's tile plan: more than ceil(rows/256) where tiles hold fewer than 256 rows), defaults to ceil(rows/256).
 */
export interface Shape {
  rows: number;
  cols: number;
  colBlocks?: number;
}

/**
 * The most roundings of 2^-24 (relative) that one invocation's lib/block_sum.wgsl sum of k positive terms takes on any
 * term's path (round-to-nearest, as GPUs add f32; an add into a zero accumulator is exact): k - 1 up to 8 terms, 6 +
 * ceil(k/8) up to 64 (7 in the first block, one per later block, one for the last, partial block), 14 + ceil(k/64)
 * beyond (14 in the first group, one per later group, two for the last adds). At most 1 more than the longest path.
 */
export function blockChain(k: number): number {
  return k <= 8 ? Math.max(k - 1, 0) : k <= 64 ? 6 + Math.ceil(k / 8) : 14 + Math.ceil(k / 64);
}

/**
 * Roundings of 2^-24 (relative) by which a row's and a column's f32 sums of positive terms may be off at most:
 * row_stats.wgsl's blocks of ceil(cols/256) terms per thread and its 8-level tree, blockChain + 8; col_stats.wgsl's
 * block partials (64 terms per quarter, then two pairwise adds: 16) and col_reduce.wgsl's blocks over them,
 * 16 + blockChain(colBlocks). Relative to the sum of the terms as the kernels form them: a sum of squares is one
 * rounding further from the exact one (each square is rounded once), which Z_CHAIN_LIMIT's measurement includes.
 */
export function sumChain(shape: Shape): { row: number; col: number } {
  const blocks = shape.colBlocks ?? Math.ceil(shape.rows / 256);
  return { row: blockChain(Math.ceil(shape.cols / 256)) + 8, col: 16 + blockChain(blocks) };
}

/**
 * The longest sum chain Z-Pruner's GPU path takes: past it, the exact path (rows wider than 294,912 columns, columns
 * longer than 163,840 rows; every LLM layer and a 128K-vocabulary head are within it). Measured, not derived
 * (tests/crafted_sums_test.ts and a review's probes, 2026-11-29, lavapipe): a sum crafted to round one way at nearly
 * every step reaches all but 1.4-7.8 of its chain's roundings, moving a line's scores by 1.5 times that relative. Two
 * lines crafted in opposite directions, with pinned weights 10.1-10.8 ppm apart across the threshold, over seeds and
 * small-weight shares 1/16 and 1/256, had weights of a 4-line layer pruned outside the band:
 * - with lavapipe's nearly exact division and sqrt, from chains of 57 (columns) and 59 (rows);
 * - with every division and sqrt emulated up to 3 and 5 ULP off (WGSL's worst), hashed per input, at 48 (1 seed of 20);
 * - with those errors set against the two lines (up where the other is down: an attack that knows the GPU), from 44.
 * At 40 none did: pinned pairs moved at most 9.99 ppm in the last setting, 8.8 in the hashed one. Those probes ran
 * the kernels' earlier W / sqrt(Σw²) with sqrt emulated 5 ULP off; with W * inverseSqrt(Σw²) emulated 2 ULP off (and
 * divisions 3), the same probes moved pinned pairs at most 7.98 ppm at chain 40 against the GPU, 7.31 hashed, and
 * none left the band up to 48 (9.26 ppm). The limit stays at 40. tests/crafted_sums_test.ts on kernels emulated by
 * bench/z_error_emulate.ts --test (hashed ±3 and ±2 or ±3, and fixed signs at ±3 and ±2) passed, 2026-11-29 (logs
 * in bench/results/2026-11-29-lavapipe-z-error/).
 * Z_SHIFT and Z_REL are fitted on layers whose sums take up to 73 roundings at random; past this limit no shape runs.
 */
export const Z_CHAIN_LIMIT = 40;

/**
 * RIA's f32 score error beyond its sums', relative: two divisions (2.5 ULP, up to 5 roundings each, as WGSL allows),
 * their sum, the activation's mantissa and the host's rounding of it: 13 roundings, counted as 16.
 */
const RIA_REL = 16 * EPS32;

/**
 * Why a rows x cols layer's f32 sums cannot give `method`'s masks within the band, whatever its values, or null.
 * Z-Pruner: a chain past Z_CHAIN_LIMIT (rows of up to 294,912 columns, columns of up to 163,840 rows in one tile).
 * RIA (no fitted part: a worst case): a score (|W| / its column's sum + |W| / its row's, times act) is off by at most
 * its sums' chains plus RIA_REL, which must stay within half the band, so rows of up to 737,280 columns and columns of
 * up to 606,208 rows. Known from the shape and the tile plan, so the engine checks it before any GPU work.
 */
export function sumsBeyondModel(method: PruneParams["method"], shape: Shape): string | null {
  const { row, col } = sumChain(shape);
  const chain = Math.max(row, col);
  const beyond = method === "zpruner" ? chain > Z_CHAIN_LIMIT : method === "ria" && RIA_REL + chain * EPS32 >= BAND / 2;
  if (!beyond) return null;
  return `a ${shape.rows}x${shape.cols} layer's float32 ${row >= col ? "row" : "column"} sums may be off by ` +
    `${chain} roundings: ${method} masks could leave the 1e-5 band`;
}

/**
 * A score's relative change per unit change of s (the small-weight fraction): alpha = 0.7 (1 - 0.3 s) moves by
 * 0.21 per unit, and a score alpha a + (1 - alpha) b by |a - b| per unit of alpha, at most itself over min(alpha,
 * 1 - alpha) >= 0.3. Each weight within thr_err of the f32 small-weight bound (`near`, centred.wgsl) may move s by
 * 1 / n.
 */
export const ALPHA_REL = 0.21 / 0.3;

/** Weights within thr_err of the f32 small-weight bound, as centred.wgsl counted them (0 where not read back). */
function nearCount(scalars: Float32Array): number {
  if (scalars.length <= Z_SCALARS.near) return 0;
  return new Uint32Array(scalars.buffer, scalars.byteOffset, scalars.length)[Z_SCALARS.near]!;
}

/**
 * The most that weights at the small-weight bound may add to the scores' relative error and stay in the budget (an
 * eighth of the band): past it, the host counts them exactly (alphaUnsettled). z_means's bound on the f32 threshold is
 * a worst case, about 2·(ceil(cols/2048) + ceil(rows/2048) + 42)·2^-24 relative, so continuous f32 weights put a few
 * per million of a layer within it (6.6e-7 of its score for a 8192x28672 layer, estimated), and f16 or bf16 ones
 * sometimes a whole grid value, which exceeds any cap.
 */
export const ALPHA_CAP = BAND / 8;

/** What `near` weights may do to a score, relatively: ALPHA_REL · near / n, in f32 as z_spread.wgsl forms it. */
function alphaRel(scalars: Float32Array, n: number): number {
  const f = Math.fround;
  return f(f(ALPHA_REL) * f(f(nearCount(scalars)) / f(n)));
}

/**
 * The most weights within thr_err of the small-weight bound whose share, ALPHA_REL · near / n, stays within ALPHA_CAP.
 * An integer, passed to z_spread.wgsl, so that the GPU (whose division may be off by 2.5 ULP) and the host take the
 * same decision at the edge.
 */
function nearCap(n: number): number {
  return Math.floor((ALPHA_CAP * n) / ALPHA_REL);
}

/** Whether the near weights' share of the error stays within ALPHA_CAP, decided as z_spread.wgsl decides it. */
function alphaCapped(scalars: Float32Array, n: number): boolean {
  return nearCount(scalars) <= nearCap(n);
}

/**
 * The relative error of Z-Pruner's f32 scores beyond the z-scores' shift: Z_REL, and what `near` weights may do.
 */
function relError(scalars: Float32Array, n: number): number {
  return Z_REL + (alphaCapped(scalars, n) ? alphaRel(scalars, n) : 0);
}

/**
 * Why the GPU's alpha may not be the CPU backend's, or null: where the weights within z_means's bound of the f32
 * small-weight bound could move the scores by more than ALPHA_CAP, the host counts the small weights as the CPU
 * backend does and compares.
 */
export function alphaUnsettled(scalars: Float32Array, layer: LayerJob): string | null {
  if (alphaCapped(scalars, layer.rows * layer.cols)) return null;
  const bits = new Uint32Array(scalars.buffer, scalars.byteOffset, scalars.length);
  const gpu = bits[Z_SCALARS.small]!;
  const exact = exactSmallCount(layer);
  if (exact === gpu) return null;
  return `${gpu} weights lie below the float32 small-weight bound 0.1 mean|W|, ${exact} below the exact one: ` +
    "alpha differs";
}

/**
 * Why Z-Pruner's zero weights may score 0 on one backend and not on the other, or null. Every zero weight scores s0 ·
 * act_j, s0 = α (|meanR| invStdR)³ + (1 - α) (|meanC| invStdC)³ the same for all of them: where s0 > 0 they are ordered
 * by act_j, where s0 = 0 by index (API.md's ties). Both means can be 0 only where the weights cancel (never in a
 * trained layer); there the GPU's f32 sums may reach 0 where exact ones do not, or the reverse, whatever the fitted
 * error model says (it assumes roundings that do not all go one way). So where both f32 means lie within a worst-case
 * bound of 0 and the layer holds a zero weight, the host looks at the exact means: the order is unsettled unless s0
 * is above 0 on both backends (score.wgsl flags an s0 · act_j that underflows). The bound: a line's f32 sum is
 * off by at most its chain of roundings times the sum of its |W|, however the terms cancel; over the row-normalised
 * lines that is Σ (Σ|W| / ‖line‖), and z_means's sum of the lines adds its own chain; doubled for the norms and the
 * divisions. The bundled model's layers, and random zero-mean ones, have a mean 44 times its bound or more from 0
 * (docs/GPU.md).
 */
export function zeroWeightsUnsettled(
  scalars: Float32Array,
  layer: LayerJob,
  rowSums: Float32Array,
  colSums: Float32Array,
  shape: Shape,
): string | null {
  const n = layer.rows * layer.cols;
  const chains = sumChain(shape);
  const nearZero = (mean: number, sums: Float32Array, lines: number, chain: number) => {
    let spread = 0;
    for (let i = 0; i < lines; i++) {
      const sq = sums[3 * i]!;
      if (sq > 0) spread += sums[3 * i + 2]! / Math.sqrt(sq);
    }
    const roundings = chain + blockChain(Math.ceil(lines / 256)) + 8 + 8;
    // Strictly: with no weight but zeros on any line (a bound of 0) the means are exactly 0 on both backends.
    return Math.abs(mean) < (2 * roundings * EPS32 * spread) / n;
  };
  const meanR = scalars[Z_SCALARS.meanR]!, meanC = scalars[Z_SCALARS.meanC]!;
  if (!nearZero(meanR, rowSums, layer.rows, chains.row) || !nearZero(meanC, colSums, layer.cols, chains.col)) {
    return null;
  }
  const zero = firstZeroWeight(layer);
  if (zero < 0) return null;
  // Settled where s0 > 0 on both backends: the GPU's f32 means are not both 0, and the exact ones (f64 on the host,
  // one pass over the weights) both lie beyond f64's rounding of 0. A large zero-mean layer with zeros (one pruned
  // before, say) may have both f32 means inside the worst-case bound; it stays on the GPU this way.
  if ((meanR !== 0 || meanC !== 0) && exactMeanNotZero(layer)) return null;
  return `its means lie within float32's rounding of 0 (weights that cancel) and weight[${zero}] is 0: whether zero ` +
    "weights score 0, and so their order, may differ from exact scores";
}

/**
 * Whether an exact mean of the row- or column-normalised weights (f64, one pass over the weights) lies beyond f64's
 * rounding of 0: a bound like zeroWeightsUnsettled's, in 2^-53 with a chain as long as a line or the lines, so far
 * beyond the CPU backend's own rounding that its mean is not 0 either, and its zero weights score above 0.
 */
function exactMeanNotZero(layer: LayerJob): boolean {
  const { rows, cols, dtype, weight } = layer;
  const size = DTYPE_BYTES[dtype];
  const row = new Float32Array(cols);
  const colSum = new Float64Array(cols), colSq = new Float64Array(cols), colAbs = new Float64Array(cols);
  let sumR = 0, spreadR = 0;
  for (let r = 0; r < rows; r++) {
    decodeInto(row, weight.subarray(r * cols * size, (r + 1) * cols * size), dtype, 0, cols);
    let s = 0, sq = 0, abs = 0;
    for (let c = 0; c < cols; c++) {
      const w = row[c]!;
      s += w;
      sq += w * w;
      abs += Math.abs(w);
      colSum[c]! += w;
      colSq[c]! += w * w;
      colAbs[c]! += Math.abs(w);
    }
    if (sq > 0) (sumR += s / Math.sqrt(sq)), (spreadR += abs / Math.sqrt(sq));
  }
  let sumC = 0, spreadC = 0;
  for (let c = 0; c < cols; c++) {
    if (colSq[c]! > 0) (sumC += colSum[c]! / Math.sqrt(colSq[c]!)), (spreadC += colAbs[c]! / Math.sqrt(colSq[c]!));
  }
  const beyond = (sum: number, spread: number) => Math.abs(sum) > 4 * (rows + cols + 16) * 2 ** -53 * spread;
  return beyond(sumR, spreadR) || beyond(sumC, spreadC);
}

/** The index of the layer's first weight equal to 0 (either sign), or -1; read from its bytes, little-endian. */
export function firstZeroWeight(layer: LayerJob): number {
  const b = layer.weight, size = DTYPE_BYTES[layer.dtype], n = layer.rows * layer.cols;
  for (let i = 0, o = 0; i < n; i++, o += size) {
    // All bits but the sign (the last byte's top bit) clear.
    const zero = size === 4
      ? (b[o]! | b[o + 1]! | b[o + 2]! | (b[o + 3]! & 0x7f)) === 0
      : (b[o]! | (b[o + 1]! & 0x7f)) === 0;
    if (zero) return i;
  }
  return -1;
}

/**
 * The CPU backend's small-weight count, bit for bit: the f64 sum of each row's |W| in column order, added in row
 * order (prune/scores.ts), smallWeightBound of it, and the weights with |W| below that. Two passes over the weights
 * (one pass that keeps the weights near the f32 bound to place them afterwards was no faster here).
 */
export function exactSmallCount(layer: LayerJob): number {
  const { rows, cols, dtype, weight } = layer;
  const size = DTYPE_BYTES[dtype];
  const row = new Float32Array(cols);
  const eachRow = (f: (w: Float32Array) => void) => {
    for (let r = 0; r < rows; r++) {
      decodeInto(row, weight.subarray(r * cols * size, (r + 1) * cols * size), dtype, 0, cols);
      f(row);
    }
  };
  let absSum = 0;
  eachRow((w) => {
    let ra = 0;
    for (let c = 0; c < cols; c++) ra += Math.abs(w[c]!);
    absSum += ra;
  });
  const bound = smallWeightBound(absSum, rows * cols);
  let small = 0;
  eachRow((w) => {
    for (let c = 0; c < cols; c++) small += Math.abs(w[c]!) < bound ? 1 : 0;
  });
  return small;
}

/**
 * The lowest threshold score (activation included) at which Z-Pruner's f32 scores keep the CPU backend's order outside
 * the band, from Z-Pruner's scalars as z_spread left them and the largest finite activation act_max; 0 when any
 * threshold does. With |Δzr| <= dR and |Δzc| <= dC, an entry whose score before its activation is s0 moves by at
 * most s0 ((1 + x)^3 - 1) with x = K / cbrt(s0), K = cbrt(α dR³ + (1 - α) dC³) (Minkowski's inequality on the
 * 3-norm), times 1 + Z_REL. An entry whose score is near a threshold T has s0 = T / act_j >= T / act_max. Two such
 * entries can swap outside the band only if their errors add up to more than BAND, so T is safe when
 * (1 + x)^3 (1 + rel) <= 1 + BAND / 2 at s0 = T / act_max, rel = Z_REL plus what weights at the small-weight bound may
 * do to alpha (relError).
 */
export function zSafeThreshold(scalars: Float32Array, n: number, maxAct: number): number {
  if (!(maxAct > 0)) return 0; // every score is 0
  // relError <= Z_REL + ALPHA_CAP, 31 + 21 roundings, under half the band's 84: x > 0.
  const x = Math.cbrt((1 + BAND / 2) / (1 + relError(scalars, n))) - 1;
  return maxAct * (zShift(scalars, n) / x) ** 3;
}

/**
 * K = cbrt(α dR³ + (1 − α) dC³), the z-scores' shift in cube-root terms (zSafeThreshold), and the relative error
 * beyond it: what z_spread.wgsl forms for select_nm.wgsl, which gpu/kernels/z_spread_test.ts compares with it.
 */
export function zErrorModel(scalars: Float32Array, n: number): { k: number; rel: number } {
  return { k: zShift(scalars, n), rel: relError(scalars, n) };
}

/** z_spread.wgsl's error-model uniforms for a layer of n weights: what it forms k and rel from, as zErrorModel does. */
export function zSpreadModel(n: number) {
  return {
    shift: Z_SHIFT * EPS32,
    floor: Z_MEAN_FLOOR / Math.sqrt(n),
    z_rel: Z_REL,
    alpha_rel: ALPHA_REL,
    near_cap: nearCap(n),
  };
}

function zShift(scalars: Float32Array, n: number): number {
  const { shift: factor, floor } = zSpreadModel(n);
  // A zero 1/std means z = 0 on that axis on both backends: no shift.
  const shift = (mean: number, inv: number) => (inv > 0 ? factor * (Math.abs(mean) * inv + floor) : 0);
  const dR = shift(scalars[Z_SCALARS.meanR]!, scalars[Z_SCALARS.invStdR]!);
  const dC = shift(scalars[Z_SCALARS.meanC]!, scalars[Z_SCALARS.invStdC]!);
  const alpha = scalars[Z_SCALARS.alpha]!;
  return Math.cbrt(alpha * dR ** 3 + (1 - alpha) * dC ** 3);
}

/** The largest finite act_j = actNormSq_j^(exponent/2) (1 without activations; 0 when none is finite and nonzero). */
function maxActivation(actNormSq: Float32Array | Float64Array | null, exponent: number, cols: number): number {
  if (!actNormSq) return 1;
  let max = 0;
  for (let j = 0; j < cols; j++) {
    const a = actNormSq[j]! ** (exponent / 2);
    if (a > max && a < Infinity) max = a;
  }
  return max;
}

/** Why a Z-Pruner layer whose threshold `t` (of `where`) is below zSafeThreshold's `tSafe` takes the exact path. */
function thresholdTooLow(where: string, t: number, tSafe: number, scalars: Float32Array, n: number): string {
  return `${where}'s threshold score ${t.toExponential(2)} is below ${tSafe.toExponential(2)}, where float32 ` +
    `z-scores (${nearNote(scalars, n)}) may leave the 1e-5 band`;
}

/**
 * Why Z-Pruner's f32 scores may select otherwise than the CPU backend's near the selection threshold (k weights pruned
 * per layer or row), or null:
 * `layer` compares select_pick's threshold with zSafeThreshold, `row` scores each row's pruned weights on the host
 * until one reaches it; N:M with M <= 64 has select_nm.wgsl count its unsafe groups (`nmUnsafe`), larger M (selected
 * by select_row.wgsl) is checked as `row` with a group for a row.
 */
export function zSelectionUnsafe(
  z: Float32Array,
  params: PruneParams,
  layer: LayerJob,
  k: number,
  layerThreshold: number,
  mask: Uint32Array,
  rowSums: Float32Array,
  colSums: Float32Array,
  nmUnsafe: number | null,
): string | null {
  const { rows, cols } = layer, n = rows * cols, p = params.pattern;
  if (p.kind === "nm" && nmUnsafe !== null) {
    if (nmUnsafe === 0) return null;
    return `${nmUnsafe} of its ${p.n}:${p.m} groups have entries whose float32 z-scores may order them otherwise ` +
      `than exact ones, outside the 1e-5 band (${nearNote(z, n)})`;
  }
  if (k === 0 && p.kind !== "nm") return null; // nothing pruned: no threshold to be near
  const tSafe = zSafeThreshold(z, n, maxActivation(layer.actNormSq, params.exponent, cols));
  if (p.kind === "layer") {
    return layerThreshold > 0 && layerThreshold < tSafe
      ? thresholdTooLow("the layer", layerThreshold, tSafe, z, n)
      : null;
  }
  if (!(tSafe > 0)) return null;
  const scores = new HostZScores(layer, params.exponent, rowSums, colSums, z);
  // N:M selected per row of M (M > 64): group g is row g of a [n / M, M] matrix, in the same row-major order.
  const [lines, width, what] = p.kind === "nm" ? [n / p.m, p.m, "group"] : [rows, cols, "row"];
  const low = lowRowThreshold(mask, lines, width, tSafe, (i) => scores.at(i));
  return low && thresholdTooLow(`${what} ${low.row}`, low.threshold, tSafe, z, n);
}

/** How far the means are from zero, and how many weights sit at the small-weight bound: what drives the error. */
function nearNote(z: Float32Array, n: number): string {
  const m = (mean: number, inv: number) => (Math.abs(mean) * inv).toPrecision(2);
  const near = nearCount(z);
  return `means ${m(z[Z_SCALARS.meanR]!, z[Z_SCALARS.invStdR]!)} and ${
    m(z[Z_SCALARS.meanC]!, z[Z_SCALARS.invStdC]!)
  } ` +
    `stds from zero${near > 0 ? `, ${near} of ${n} weights at 0.1 mean|W|` : ""}`;
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
 * (A threshold of 0 is safe: zero scores come from zero activations, zero on both backends, or from means that are 0,
 * which zeroWeightsUnsettled has checked; score.wgsl flags a score that underflows.)
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
