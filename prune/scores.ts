/**
 * Importance scores of API.md ("Scores") for the four methods, computed in float64 and stored as float32.
 *
 * Why float32 storage cannot change the ranking the contract demands: rounding to float32 is monotone
 * (a <= b implies f32(a) <= f32(b)), so two scores keep their order unless they round to the same float32,
 * which needs a relative difference below 2^-24 (6e-8) — far inside the contract's 1e-5 ambiguity band, where
 * either order is acceptable. Equal float32 scores are then ordered by index, as the contract says for ties.
 *
 * The z-score statistics take three passes over the weights: (1) row and column sums, sums of squares and
 * absolute sums; (2) centred sums of squares of the normalised matrices (two-pass variance, as numpy does, so
 * constant matrices give std exactly 0) and the small-weight count for alpha; (3) the scores.
 */
import type { Method } from "../contract/api.ts";

/** Per-row and per-column sums of one pass over a weight matrix. */
export interface MatrixSums {
  rowSum: Float64Array;
  rowSumSq: Float64Array;
  rowAbs: Float64Array;
  colSum: Float64Array;
  colSumSq: Float64Array;
  colAbs: Float64Array;
}

/**
 * Allocates zeroed sums for a rows x cols matrix: only the arrays `method` uses (zpruner: signed sums and sums of
 * squares, row sums of |W|; ria: sums of |W|), the others empty. Magnitude and Wanda use none: a layer's 24 bytes a
 * row and a column, per row block on the workers, were allocated for nothing (measured in an audit: a 1 x 64M f32
 * magnitude layer grew the server by 5677 MiB against its 1048 MiB estimate).
 */
export function newSums(rows: number, cols: number, method: Method): MatrixSums {
  const z = method === "zpruner", a = z || method === "ria";
  return {
    rowSum: new Float64Array(z ? rows : 0),
    rowSumSq: new Float64Array(z ? rows : 0),
    rowAbs: new Float64Array(a ? rows : 0),
    colSum: new Float64Array(z ? cols : 0),
    colSumSq: new Float64Array(z ? cols : 0),
    colAbs: new Float64Array(method === "ria" ? cols : 0),
  };
}

/**
 * Pass 1 over rows [r0, r1): accumulates what `method` needs into `s` (from `newSums(r1 - r0, cols, method)`: its
 * row arrays hold these rows only, row r at r - r0): zpruner needs signed sums and sums of squares, ria absolute sums;
 * the others nothing.
 */
export function accumulateSums(
  method: Method,
  W: Float32Array,
  cols: number,
  r0: number,
  r1: number,
  s: MatrixSums,
): void {
  const { rowSum, rowSumSq, rowAbs, colSum, colSumSq, colAbs } = s;
  if (method === "zpruner") {
    for (let r = r0; r < r1; r++) {
      const base = r * cols;
      let rs = 0, rq = 0, ra = 0;
      for (let c = 0; c < cols; c++) {
        const w = W[base + c]!;
        const q = w * w;
        rs += w;
        rq += q;
        ra += Math.abs(w);
        colSum[c]! += w;
        colSumSq[c]! += q;
      }
      rowSum[r - r0] = rs;
      rowSumSq[r - r0] = rq;
      rowAbs[r - r0] = ra;
    }
  } else if (method === "ria") {
    for (let r = r0; r < r1; r++) {
      const base = r * cols;
      let ra = 0;
      for (let c = 0; c < cols; c++) {
        const a = Math.abs(W[base + c]!);
        ra += a;
        colAbs[c]! += a;
      }
      rowAbs[r - r0] = ra;
    }
  }
}

/** Adds `b`'s column sums into `a` (row sums are disjoint ranges and already in place); empty arrays stay so. */
export function mergeColumnSums(a: MatrixSums, b: MatrixSums): void {
  for (let c = 0; c < a.colSum.length; c++) a.colSum[c]! += b.colSum[c]!;
  for (let c = 0; c < a.colSumSq.length; c++) a.colSumSq[c]! += b.colSumSq[c]!;
  for (let c = 0; c < a.colAbs.length; c++) a.colAbs[c]! += b.colAbs[c]!;
}

/** 1 / x, with 0 for x = 0: the contract's "a zero norm (or sum) gives 0, never NaN". */
function safeInverse(x: Float64Array, sqrt: boolean): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = sqrt ? Math.sqrt(x[i]!) : x[i]!;
    out[i] = v > 0 ? 1 / v : 0;
  }
  return out;
}

/**
 * Z-Pruner's small-weight bound 0.1 · mean|W| from the sum of the rows' f64 sums of |W| (each in column order, added
 * in row order). The GPU engine forms it so too when it must count the small weights as this backend does.
 */
export function smallWeightBound(absSum: number, n: number): number {
  return 0.1 * (absSum / n);
}

/** Pass 2's partials: centred sums of squares of Wr and Wc, the centred sums themselves, the small-weight count. */
export interface CentredSums {
  ssR: number;
  ssC: number;
  /** Σ(Wr - meanR): zero in exact arithmetic; what the computed mean's rounding left, for the corrected variance. */
  dR: number;
  dC: number;
  small: number;
}

/** Pass 2 partials over rows [r0, r1): centred sums (of squares) of Wr and Wc, and the small-weight count. */
export function centredSums(
  W: Float32Array,
  cols: number,
  r0: number,
  r1: number,
  invRow: Float64Array,
  invCol: Float64Array,
  meanR: number,
  meanC: number,
  smallBelow: number,
): CentredSums {
  let ssR = 0, ssC = 0, dR = 0, dC = 0, small = 0;
  for (let r = r0; r < r1; r++) {
    const base = r * cols;
    const ir = invRow[r]!;
    for (let c = 0; c < cols; c++) {
      const w = W[base + c]!;
      const dr = w * ir - meanR;
      const dc = w * invCol[c]! - meanC;
      ssR += dr * dr;
      ssC += dc * dc;
      dR += dr;
      dC += dc;
      small += Math.abs(w) < smallBelow ? 1 : 0; // no branch: the comparison is a coin toss for typical weights
    }
  }
  return { ssR, ssC, dR, dC, small };
}

/** Everything pass 3 needs to score a row range. */
export interface ScoreContext {
  method: Method;
  cols: number;
  /** act_j = actNormSq_j^(exponent/2), or null for all ones. */
  act: Float64Array | null;
  invRow: Float64Array;
  invCol: Float64Array;
  /** ria: 1 / row and column sums of |W| (0 where the sum is 0). */
  invRowAbs?: Float64Array;
  invColAbs?: Float64Array;
  meanR: number;
  meanC: number;
  /** 1 / std, or 0 where std is 0 or n = 1 (z = 0). */
  invStdR: number;
  invStdC: number;
  alpha: number;
}

/**
 * The smallest float64 that rounds to infinity in float32 (2^128 - 2^103, halfway past the largest float32, which
 * rounds up: its last bit is odd).
 */
const F32_OVERFLOW = 3.4028235677973366e38;

/**
 * Pass 3 over rows [r0, r1): writes the float32 score of every weight into `out`. Returns the index of the first
 * score past float32's range (it would be stored as infinity, and every such score tie), or -1.
 *
 * The loops multiply s * act_j where the contract asks for `times(s, act_j)` (0 * infinity counts as 0): the same
 * float64 value whenever every act_j is finite and at least +0, since s is never -0 (each method's s is a sum of
 * products of absolute values and non-negative factors) and s = +0 gives +0 * act_j = +0. act_j is infinite only
 * where actNormSq_j^(exponent/2) overflows float64 (a large sum at a large exponent): such a layer takes the
 * reference loop, which tests every score. A null act multiplies by ones (s * 1 = s). One loop per method, so that
 * no loop tests the method or the activations at every weight (measured: the score pass about 10% faster).
 */
export function scoreRows(W: Float32Array, ctx: ScoreContext, r0: number, r1: number, out: Float32Array): number {
  const { cols, method } = ctx;
  const act = ctx.act ?? new Float64Array(cols).fill(1);
  if (method !== "magnitude" && !finiteNonNegative(act)) return scoreRowsGuarded(W, ctx, r0, r1, out);
  // Each row's largest score before rounding (a running maximum, in registers), checked once per row against the
  // overflow: no second pass over the scores (magnitude's |w| is a float32 already and cannot overflow).
  let overRow = -1;
  for (let r = r0; r < r1; r++) {
    const base = r * cols;
    let rowTop = 0;
    if (method === "magnitude") magnitudeRow(W, base, cols, out);
    else if (method === "wanda") rowTop = wandaRow(W, base, cols, act, out);
    else if (method === "ria") rowTop = riaRow(W, base, cols, ctx.invRowAbs![r]!, ctx.invColAbs!, act, out);
    else rowTop = zprunerRow(W, base, cols, ctx, ctx.invRow[r]!, act, out);
    if (rowTop >= F32_OVERFLOW && overRow < 0) overRow = r;
  }
  return firstOverflow(out, cols, overRow);
}

/** Whether every entry is finite and at least +0 (-0 excluded): where `times(s, a)` equals `s * a` for s >= +0. */
function finiteNonNegative(a: Float64Array): boolean {
  for (let i = 0; i < a.length; i++) {
    const v = a[i]!;
    if (!(v >= 0 && v < Infinity) || Object.is(v, -0)) return false;
  }
  return true;
}

/** |w| of one row. */
function magnitudeRow(W: Float32Array, base: number, cols: number, out: Float32Array): void {
  for (let i = base, end = base + cols; i < end; i++) out[i] = Math.abs(W[i]!);
}

/** Wanda's |w| * act_j over one row; returns the row's largest score. */
function wandaRow(W: Float32Array, base: number, cols: number, act: Float64Array, out: Float32Array): number {
  let rowTop = 0;
  for (let c = 0, i = base; c < cols; c++, i++) {
    const s = Math.abs(W[i]!) * act[c]!;
    out[i] = s;
    rowTop = s > rowTop ? s : rowTop;
  }
  return rowTop;
}

/** RIA's (|w| / colAbs + |w| / rowAbs) * act_j over one row; returns the row's largest score. */
function riaRow(
  W: Float32Array,
  base: number,
  cols: number,
  ira: number,
  ica: Float64Array,
  act: Float64Array,
  out: Float32Array,
): number {
  let rowTop = 0;
  for (let c = 0, i = base; c < cols; c++, i++) {
    const a = Math.abs(W[i]!);
    const s = (a * ica[c]! + a * ira) * act[c]!;
    out[i] = s;
    rowTop = s > rowTop ? s : rowTop;
  }
  return rowTop;
}

/** Z-Pruner's (alpha |zr|^3 + (1 - alpha) |zc|^3) * act_j over one row; returns the row's largest score. */
function zprunerRow(
  W: Float32Array,
  base: number,
  cols: number,
  ctx: ScoreContext,
  ir: number,
  act: Float64Array,
  out: Float32Array,
): number {
  const { invCol, meanR, meanC, invStdR, invStdC, alpha } = ctx;
  const beta = 1 - alpha;
  let rowTop = 0;
  for (let c = 0, i = base; c < cols; c++, i++) {
    const w = W[i]!;
    const zr = Math.abs((w * ir - meanR) * invStdR);
    const zc = Math.abs((w * invCol[c]! - meanC) * invStdC);
    const s = (alpha * zr * zr * zr + beta * zc * zc * zc) * act[c]!;
    out[i] = s;
    rowTop = s > rowTop ? s : rowTop;
  }
  return rowTop;
}

/** The index of the first infinity in row `overRow` of `out`, or -1 where no row overflowed (overRow < 0). */
function firstOverflow(out: Float32Array, cols: number, overRow: number): number {
  if (overRow < 0) return -1;
  const from = overRow * cols;
  return from + out.subarray(from, from + cols).indexOf(Infinity);
}

/** `scoreRows`' reference loop, testing every score for 0 * infinity: for activations that overflowed float64. */
function scoreRowsGuarded(W: Float32Array, ctx: ScoreContext, r0: number, r1: number, out: Float32Array): number {
  const { cols, act, method } = ctx;
  let overRow = -1;
  for (let r = r0; r < r1; r++) {
    const base = r * cols;
    let rowTop = 0;
    if (method === "wanda") {
      for (let c = 0; c < cols; c++) {
        const s = times(Math.abs(W[base + c]!), act ? act[c]! : 1);
        out[base + c] = s;
        rowTop = s > rowTop ? s : rowTop;
      }
    } else if (method === "ria") {
      const ira = ctx.invRowAbs![r]!;
      const ica = ctx.invColAbs!;
      for (let c = 0; c < cols; c++) {
        const a = Math.abs(W[base + c]!);
        const s = times(a * ica[c]! + a * ira, act ? act[c]! : 1);
        out[base + c] = s;
        rowTop = s > rowTop ? s : rowTop;
      }
    } else {
      const { invCol, meanR, meanC, invStdR, invStdC, alpha } = ctx;
      const ir = ctx.invRow[r]!;
      const beta = 1 - alpha;
      for (let c = 0; c < cols; c++) {
        const w = W[base + c]!;
        const zr = Math.abs((w * ir - meanR) * invStdR);
        const zc = Math.abs((w * invCol[c]! - meanC) * invStdC);
        const s = times(alpha * zr * zr * zr + beta * zc * zc * zc, act ? act[c]! : 1);
        out[base + c] = s;
        rowTop = s > rowTop ? s : rowTop;
      }
    }
    if (rowTop >= F32_OVERFLOW && overRow < 0) overRow = r;
  }
  return firstOverflow(out, cols, overRow);
}

/** s * act, where 0 * infinity (an activation that overflowed float64) counts as 0, never NaN. */
function times(s: number, act: number): number {
  return s === 0 ? 0 : s * act;
}

/** act_j = actNormSq_j^(exponent/2) in float64; null stays null (all ones). */
export function activationWeights(
  actNormSq: Float32Array | Float64Array | null,
  exponent: number,
): Float64Array | null {
  if (!actNormSq) return null;
  const out = new Float64Array(actNormSq.length);
  const half = exponent / 2;
  // "+ 0" turns an entry of -0 (a valid sum of squares) into +0: (-0)^(odd integer) is -0, and a score of -0
  // would rank above every positive one in selection's unsigned key order.
  for (let j = 0; j < out.length; j++) out[j] = actNormSq[j]! ** half + 0;
  return out;
}

/**
 * The corrected two-pass sum of squares: Σ(x - m)² - (Σ(x - m))² / n. The second term removes what the computed
 * mean's own rounding adds (n·δ² for a mean off by δ), which over a long constant axis outgrows rounding level.
 */
function corrected(ss: number, d: number, n: number): number {
  return Math.max(0, ss - (d * d) / n);
}

/** A std at or below this fraction of the entries' root mean square is rounding, not spread: see `invStd`. */
const ZERO_STD = 2 ** -40;

/**
 * 1/std (unbiased) of n entries with centred sum of squares `ss` and mean `mean`, or 0 when the std is zero.
 * API.md's zero std is the exact one: entries that are equal in exact arithmetic (one row or one column, constant
 * rows) come out of w / norm unequal in their last bits, and a std of 1e-16 of their size would scale that noise
 * into z-scores of order 1. So a std within ZERO_STD of the entries' root mean square (sqrt(ss / n + mean^2)) counts
 * as zero: far above float64's rounding, far below the spread of any real weight matrix.
 */
function invStd(ss: number, mean: number, n: number): number {
  if (n <= 1) return 0;
  const std = Math.sqrt(ss / (n - 1));
  return std > ZERO_STD * Math.sqrt(ss / n + mean * mean) ? 1 / std : 0;
}

/**
 * Z-Pruner's mixing weight alpha = 0.7 * (1 - 0.3 * s), s = small / n the fraction of weights under the small-weight
 * bound (API.md, Scores). The GPU engine reports it through this too, so both backends round it alike.
 */
export function zprunerAlpha(small: number, n: number): number {
  return 0.7 * (1 - 0.3 * (small / n));
}

/**
 * Builds the scoring context from pass-1 sums and the pass-2 callback (which may run on several workers).
 * `pass2` receives the means and the small-weight bound and returns the combined partials.
 */
export async function buildContext(
  method: Method,
  rows: number,
  cols: number,
  sums: MatrixSums | null,
  act: Float64Array | null,
  pass2: (invRow: Float64Array, invCol: Float64Array, meanR: number, meanC: number, smallBelow: number) => Promise<
    CentredSums
  >,
): Promise<ScoreContext> {
  const empty = new Float64Array(0);
  const ctx: ScoreContext = {
    method,
    cols,
    act: method === "magnitude" ? null : act,
    invRow: empty,
    invCol: empty,
    meanR: 0,
    meanC: 0,
    invStdR: 0,
    invStdC: 0,
    alpha: 0,
  };
  if (method === "ria") {
    ctx.invRowAbs = safeInverse(sums!.rowAbs, false);
    ctx.invColAbs = safeInverse(sums!.colAbs, false);
  }
  if (method !== "zpruner") return ctx;
  const s = sums!;
  const n = rows * cols;
  const invRow = safeInverse(s.rowSumSq, true);
  const invCol = safeInverse(s.colSumSq, true);
  let sumR = 0, sumC = 0, absSum = 0;
  for (let r = 0; r < rows; r++) {
    sumR += s.rowSum[r]! * invRow[r]!;
    absSum += s.rowAbs[r]!;
  }
  for (let c = 0; c < cols; c++) sumC += s.colSum[c]! * invCol[c]!;
  const meanR = sumR / n, meanC = sumC / n;
  const { ssR, ssC, dR, dC, small } = await pass2(invRow, invCol, meanR, meanC, smallWeightBound(absSum, n));
  Object.assign(ctx, {
    invRow,
    invCol,
    meanR,
    meanC,
    invStdR: invStd(corrected(ssR, dR, n), meanR, n),
    invStdC: invStd(corrected(ssC, dC, n), meanC, n),
    alpha: zprunerAlpha(small, n),
  });
  return ctx;
}
