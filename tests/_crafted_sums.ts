/**
 * Host emulation of the GPU's f32 row and column sums, bit for bit, and a greedy crafter of rows and columns whose
 * f32 sums of squares (or of |w|) round one way at nearly every addition that counts.
 *
 * Why: gpu/f32_safety.ts (sumChain) bounds how far those sums may be off, and the engine's cut-offs
 * (sumsBeyondModel) follow from it. Random weights round both ways and reach a few roundings; only data that makes
 * every rounding go one way shows whether the bound is met and whether it is close to tight. Crafting needs the exact
 * order of the additions, so the emulation follows the kernels step by step (Math.fround after every operation),
 * and tests/crafted_sums_test.ts checks it against the kernels on an adapter before trusting anything crafted with it.
 *
 * Orders emulated (read from the WGSL; lib/block_sum.wgsl is "add each term into a block of 8, each full block into
 * its group, each group of 8 blocks into the total, and (total + group) + block at the end"):
 *   row_stats.wgsl:  thread t of 256 sums the row's columns t, t + 256, ... through block_sum, then the 256 thread
 *                    sums are added as a tree: s[t] += s[t + off] for off = 128, 64, ..., 1.
 *   col_stats.wgsl:  per block of 256 rows and column, quarter q (rows 64q .. 64q + 63 of the block) sums its rows in
 *                    order through block_sum (64 terms: one group); the block partial is (q0 + q1) + (q2 + q3).
 *   col_reduce.wgsl: a column's block partials, in block order, through block_sum.
 * The product v * v is rounded to f32 before it is added (the kernels form vec4f(v * v, v, abs(v), 0) first). A GPU
 * that fuses it into the addition (an FMA, which Vulkan allows) rounds once less per term: bit for bit is lavapipe's
 * arithmetic, and the bound holds either way.
 */
import { rng } from "./_random.ts";

const fr = Math.fround;

/** A value and the exact (f64) value it was rounded from: what crafting aims at, a rounding's input. */
interface Rounded {
  exact: number;
  value: number;
}

/** A value no rounding produced (a term, or a sum already in f32). */
const held = (value: number): Rounded => ({ exact: value, value });

/** An f32 addition as the GPU does it; adding to zero (an empty accumulator) is exact, and passes the other on. */
function plus(a: Rounded, b: Rounded): Rounded {
  if (a.value === 0) return b;
  if (b.value === 0) return a;
  const exact = a.value + b.value;
  return { exact, value: fr(exact) };
}

/**
 * lib/block_sum.wgsl for one quantity: each term into a block of 8, each full block into its group, each group of 8
 * blocks into the total; (total + group) + block at the end.
 */
class BlockSum {
  total = 0;
  group = 0;
  block = 0;
  terms = 0;
  blocks = 0;
  add(x: number): void {
    this.block = fr(this.block + x);
    if (++this.terms === 8) {
      this.group = fr(this.group + this.block);
      this.block = 0;
      this.terms = 0;
      if (++this.blocks === 8) {
        this.total = fr(this.total + this.group);
        this.group = 0;
        this.blocks = 0;
      }
    }
  }
  result(): number {
    return fr(fr(this.total + this.group) + this.block);
  }
  clone(): BlockSum {
    return Object.assign(new BlockSum(), this);
  }
  /**
   * The exact value behind the last rounding that adding term x performs, at the highest level it reaches: the
   * block's addition, the block's into its group when x fills the block, the group's into the total when that fills
   * the group. An addition to an empty accumulator passes the other side's on.
   */
  addExact(x: number): number {
    const block = plus(held(this.block), held(x));
    if (this.terms + 1 < 8) return block.exact;
    const group = plus(held(this.group), block);
    if (this.blocks + 1 < 8) return group.exact;
    return plus(held(this.total), group).exact;
  }
  /** After adding x: the total, group and block, each with the exact value behind its last rounding. */
  private after(x: number): [Rounded, Rounded, Rounded] {
    let block = plus(held(this.block), held(x)), group = held(this.group), total = held(this.total);
    if (this.terms + 1 === 8) {
      [group, block] = [plus(group, block), held(0)];
      if (this.blocks + 1 === 8) [total, group] = [plus(total, group), held(0)];
    }
    return [total, group, block];
  }
  /** The exact value behind result()'s first addition, total + group, were x added next. */
  pendingExact(x: number): number {
    const [total, group] = this.after(x);
    return plus(total, group).exact;
  }
  /** The exact value behind result()'s last rounding, were x the last term added. */
  resultExact(x: number): number {
    const [total, group, block] = this.after(x);
    return plus(plus(total, group), block).exact;
  }
}

/**
 * Which addition term i of k (from 0, the first one big, the others small) is crafted to round at the big term's
 * scale in lib/block_sum.wgsl's order, or null: "add" for the rest of the first block (i = 1-7), each later block's
 * last term in the first group (its block into the group) and each later group's last term (its group into the
 * total); "pending" for the last full block's last term, when its group is a later one left partial and a partial
 * block follows (the final total + group); "result" for the last term (the final (total + group) + block). The other
 * additions are at the small terms' scale and hardly count.
 */
function crafted(i: number, k: number): "add" | "pending" | "result" | null {
  if (i === k - 1) return "result";
  if ((i >= 1 && i < 8) || (i < 64 && i % 8 === 7) || i % 64 === 63) return "add";
  return i === 8 * Math.floor(k / 8) - 1 ? "pending" : null;
}

/** The exact value behind the addition `crafted` names, as a function of term x added to `s`. */
function aim(s: BlockSum, which: "add" | "pending" | "result"): (x: number) => number {
  const at = s.clone();
  return which === "add"
    ? (x) => at.addExact(x)
    : which === "pending"
    ? (x) => at.pendingExact(x)
    : (x) => at.resultExact(x);
}

/** The three quantities every stats kernel sums per weight: v * v (rounded to f32), v and |v|. */
class Sums3 {
  sq = new BlockSum();
  sum = new BlockSum();
  abs = new BlockSum();
  add(v: number): void {
    this.sq.add(fr(v * v));
    this.sum.add(v);
    this.abs.add(Math.abs(v));
  }
  result(): Triple {
    return [this.sq.result(), this.sum.result(), this.abs.result()];
  }
}

/** row_stats.wgsl's 8-level tree over 256 thread sums, in place: s[t] += s[t + off], off = 128 .. 1. */
function rowTree(s: Float64Array | number[]): number {
  for (let off = 128; off > 0; off >>= 1) {
    for (let t = 0; t < off; t++) s[t] = fr(s[t]! + s[t + off]!);
  }
  return s[0]!;
}

/** row_stats.wgsl's [sumSq, sum, sumAbs] per row of a rows x cols f32 matrix, as the kernel computes them. */
export function emulateRowStats(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * 3);
  const sq = new Float64Array(256), sm = new Float64Array(256), ab = new Float64Array(256);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    for (let t = 0; t < 256; t++) {
      const s = new Sums3();
      for (let j = t; j < cols; j += 256) s.add(w[start + j]!);
      [sq[t], sm[t], ab[t]] = s.result();
    }
    out[3 * r] = rowTree(sq);
    out[3 * r + 1] = rowTree(sm);
    out[3 * r + 2] = rowTree(ab);
  }
  return out;
}

/**
 * col_stats.wgsl's partial of column j over the block of 256 rows starting at row b0 (clipped at `rows`): each
 * quarter of 64 rows in order in blocks of 8, then (q0 + q1) + (q2 + q3).
 */
function blockPartial(w: Float32Array, rows: number, cols: number, j: number, b0: number): Triple {
  const [a, b, c, d] = [0, 1, 2, 3].map((quarter) => {
    const s = new Sums3();
    const r0 = b0 + 64 * quarter, r1 = Math.min(r0 + 64, rows);
    for (let r = r0; r < r1; r++) s.add(w[r * cols + j]!);
    return s.result();
  }) as [Triple, Triple, Triple, Triple];
  const add = (i: 0 | 1 | 2) => fr(fr(a[i] + b[i]) + fr(c[i] + d[i]));
  return [add(0), add(1), add(2)];
}

type Triple = [number, number, number];

/**
 * col_stats.wgsl then col_reduce.wgsl (one tile: blocks of 256 rows from row 0): [sumSq, sum, sumAbs] per column of
 * a rows x cols f32 matrix, as the kernels compute them.
 */
export function emulateColStats(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(cols * 3);
  for (let j = 0; j < cols; j++) {
    const sq = new BlockSum(), sm = new BlockSum(), ab = new BlockSum();
    for (let b0 = 0; b0 < rows; b0 += 256) {
      const [x, y, z] = blockPartial(w, rows, cols, j, b0);
      sq.add(x);
      sm.add(y);
      ab.add(z);
    }
    out[3 * j] = sq.result();
    out[3 * j + 1] = sm.result();
    out[3 * j + 2] = ab.result();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Crafting
// ---------------------------------------------------------------------------------------------------------------

/** Which sum is crafted: of squares (Z-Pruner's norms) or of |w| (RIA's sums). */
export type Term = "sq" | "abs";
/** +1: every addition that counts rounds up (the f32 sum comes out too large); -1: down. */
export type Direction = 1 | -1;

/** The term a weight of magnitude v adds, as the kernels form it. */
function termOf(kind: Term, v: number): number {
  return kind === "sq" ? fr(v * v) : v;
}

/** The magnitude of a weight whose term is about x. */
function weightFor(kind: Term, x: number): number {
  return kind === "sq" ? Math.sqrt(x) : x;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The positive f32 `steps` steps of 1 ulp from positive f32 v (negative: towards zero). */
function stepF32(v: number, steps: number): number {
  f32[0] = v;
  u32[0] = u32[0]! + steps;
  return f32[0];
}

/** The ulp of positive normal f32 x. */
function ulp(x: number): number {
  f32[0] = x;
  return 2 ** (((u32[0]! >>> 23) & 0xff) - 127 - 23);
}

/** Candidates scanned each side of the aimed-at weight (ulps of the weight). */
const SPAN = 24;

/**
 * The f32 weight magnitude near `v0` whose term x makes one addition round as far as it can in direction `dir`:
 * `exact(x)` is that addition's exact (f64) value, a function of the term (through any roundings in between). With
 * `to`, only weights whose rounded addition gives exactly `to` count (null if none does).
 *
 * How: round-to-nearest moves a value by at most half its ulp q, and by nearly that when the exact value lies just past
 * the midpoint between two floats on the side away from `dir`. So the term is shifted to put the exact value there
 * (at most q/2, a small fraction of the term for every term crafted here), and the weights a few ulps either side
 * are tried, since the term's own rounding (v * v to f32) and any in between make the landing inexact.
 */
function tune(
  kind: Term,
  v0: number,
  exact: (x: number) => number,
  dir: Direction,
  to?: number,
): number | null {
  const x0 = termOf(kind, v0), d0 = exact(x0);
  const q = ulp(fr(to ?? d0));
  let aim: number;
  if (to !== undefined) {
    aim = to - dir * (0.5 - 2 ** -7) * q;
  } else {
    // The fraction of an ulp at which `exact` should land: just past the midpoint, on the side away from dir.
    const frac = d0 / q - Math.floor(d0 / q);
    let shift = 0.5 + dir * 2 ** -7 - frac;
    if (shift > 0.5) shift -= 1;
    if (shift < -0.5) shift += 1;
    aim = d0 + shift * q;
  }
  const x1 = x0 + (aim - d0);
  const v1 = x1 > 0 ? fr(weightFor(kind, x1)) : v0;
  let best: number | null = null, bestErr = -Infinity;
  for (let i = 0; i <= 2 * SPAN; i++) {
    // 0, 1, -1, 2, -2, ...: the nearest of equally good candidates wins.
    const v = stepF32(v1, i % 2 ? (i + 1) / 2 : -i / 2);
    const d = exact(termOf(kind, v));
    const r = fr(d);
    if (to !== undefined && r !== to) continue;
    const err = dir * (r - d);
    if (err > bestErr) [best, bestErr] = [v, err];
  }
  return best;
}

/** The f32 near `v0` whose square rounds to f32 as far as it can in direction `dir`. */
function tuneSquare(v0: number, dir: Direction): number {
  let best = v0, bestErr = -Infinity;
  for (let i = -SPAN; i <= SPAN; i++) {
    const v = stepF32(v0, i);
    const err = dir * (fr(v * v) - v * v);
    if (err > bestErr) [best, bestErr] = [v, err];
  }
  return best;
}

/** Σ x_i in f64 with Neumaier's compensation: the oracle's sums, good to far below one f32 rounding here. */
function exactSum(xs: Iterable<number>): number {
  let s = 0, c = 0;
  for (const x of xs) {
    const t = s + x;
    c += Math.abs(s) >= Math.abs(x) ? s - t + x : x - t + s;
    s = t;
  }
  return s + c;
}

/** A crafted line (a row or a column): its weights and its sums as the kernels compute them and exactly. */
export interface CraftedLine {
  /** The weights, in the line's order (a row's columns, a column's rows); signs alternate, + first. */
  values: Float32Array;
  /** The small weights' nominal magnitude, which smallRanges and pins are relative to. */
  small: number;
  /** The crafted sum (of squares or of |w|) as the kernels compute it (emulated; f32). */
  f32: number;
  /** The same sum in f64 from the f32 weights (products exact, Neumaier-compensated). */
  exact: number;
  /** (f32 - exact) / exact in units of 2^-24: the bias reached, in sumChain's roundings. */
  roundings: number;
}

/** How a line is shaped: see craftRow and craftColumn. */
export interface CraftOptions {
  kind: Term;
  dir: Direction;
  /** Seed of the small weights' magnitudes. */
  seed: number;
  /**
   * The small weights' share of the line's sum, relative to the big ones' (default 1/16). The big terms fix the
   * ulp at which the sum rounds; the smaller this share, the nearer each rounding comes to 2^-24 of the whole sum.
   */
  smallShare?: number;
  /**
   * Where the small weights' magnitudes are drawn, relative to their nominal one (`CraftedLine.small`): a range
   * picked at random, then a value uniformly within it (default [[0.995, 1.005]]). Crafting then moves the weights
   * it tunes (about one in 8) by a few parts in 10^4.
   */
  smallRanges?: readonly (readonly [number, number])[];
  /**
   * Small weights placed exactly (relative magnitude, as smallRanges) and left alone by crafting, by position in
   * the line: where a test wants scores at a chosen distance. Only at positions crafting leaves alone (craftRow's and
   * craftColumn's headers say which it tunes; both throw on a pin there).
   */
  pins?: ReadonlyMap<number, number>;
  /** The line's big terms lie just above 2^exponent (default -2). */
  exponent?: number;
}

/** Nominal magnitudes of a line of `terms` with one big term per `bigs`: where crafting starts from. */
function nominal(kind: Term, terms: number, bigs: number, o: CraftOptions) {
  const share = o.smallShare ?? 1 / 16, e = o.exponent ?? -2;
  const ranges = o.smallRanges ?? [[0.995, 1.005]];
  // Each big term lies just above 2^e (so the sums that start from it round at ulp 2^(e-23), 2^-24 of 2^e).
  const bigTerm = 2 ** e * (1 + 2 ** -12);
  // The small terms of one big term's sum add up to `share` of it.
  const small = weightFor(kind, (share * bigTerm * bigs) / (terms - bigs));
  const rand = rng(o.seed);
  // Tuning moves a term by up to half an ulp of the big sums it rounds in (a row's last term, which the tree stage
  // moves too, by up to LEAF_SPAN + 1/2). A term smaller than 512 times that would move by over 1/512 of itself (a
  // column's small terms, 1/16 of one big term shared by 100,000 rows, would move by several percent and land anywhere
  // among the others): such a position starts from a term of 2048 times it instead (1024 ulps, at least twice the
  // small weights' size), which moves by under 1/2048 of itself.
  const ulpBig = 2 ** (e - 23);
  return {
    small,
    big: (i: number) => fr(weightFor(kind, bigTerm * (1 + i * 2 ** -16))),
    /** Where a tuned position that moves by up to `span` ulps starts: its draw `v`, or a weight 2048 times that. */
    tunable: (v: number, span = 0.5) =>
      termOf(kind, v) < 512 * span * ulpBig ? fr(weightFor(kind, 2048 * span * ulpBig)) : v,
    /** A small weight for position `pos`: its pin, or a draw from smallRanges. */
    smallAt: (pos: number) => {
      const pin = o.pins?.get(pos);
      if (pin !== undefined) return fr(small * pin);
      const [lo, hi] = ranges[Math.floor(rand() * ranges.length)]!;
      return fr(small * (lo + (hi - lo) * rand()));
    },
  };
}

/** Checks a line length the crafter handles: whole blocks of 256 (every thread, or quarter, has the same terms). */
function checkLength(what: string, n: number): void {
  if (!(Number.isInteger(n) && n % 256 === 0 && n >= 4096)) {
    throw new RangeError(`${what} ${n}: the crafter takes multiples of 256 from 4096`);
  }
}

/** Signs alternate along a line, so that its signed sum (and a layer's means) stay near zero. */
function signed(magnitudes: Float64Array | number[]): Float32Array {
  return Float32Array.from(magnitudes, (m, i) => (i % 2 ? -m : m));
}

/** Candidate thread sums tried each side of a thread's own (ulps), for the tree's roundings. */
const LEAF_SPAN = 4;

/**
 * A row of `cols` weights whose f32 sum of squares (kind "sq") or of |w| ("abs"), as row_stats.wgsl adds it, is off
 * in direction `dir` by as many roundings as this greedy construction reaches.
 *
 * Shape of the row, per thread t (columns t, t + 256, ...: K = cols / 256 terms):
 * - its first term is big (its term just above 2^e) and the other K - 1 are small (together 1/16 of it): every
 *   partial sum the thread forms from it lies just above 2^e, so each rounding there can be worth nearly 2^-24 of
 *   the final sum (had the terms been alike, the early partial sums would be small and their roundings worth little);
 * - the big square itself rounds the chosen way (v * v is rounded to f32);
 * - each term whose addition rounds at the big term's scale (`crafted`: the first block's other 7, the last of each
 *   later block of the first group, the last of each later group, the last full block's when a partial group and a
 *   partial block end the sum, the last of all) is chosen so that it rounds the chosen way; the others are left as
 *   drawn (their roundings are at the small terms' scale);
 * - the last term also picks which float the thread's sum becomes, among a few ulps either side, so that the
 *   8-level tree over the 256 thread sums rounds the chosen way where it can: two sums of one binade add exactly or
 *   tie, and a tie rounds to even, so at most about every other level can round (chosen by coordinate ascent over
 *   the threads).
 * Up to blockChain(K) roundings per thread (all of them when the last group and the last block are both partial, as
 * with K = 64 G - 7; one fewer when both are full) and a few in the tree: sumChain's row bound is blockChain(K) + 8.
 */
export function craftRow(cols: number, o: CraftOptions): CraftedLine {
  checkLength("a row of", cols);
  const { kind, dir } = o;
  const K = cols / 256;
  const nom = nominal(kind, cols, 256, o);
  const mag = new Float64Array(cols);
  // A tuned position takes the weight crafting picks, starting from its draw; pins may not be there.
  const tuned = (pos: number, v0: number, exact: (x: number) => number, span?: number) => {
    if (o.pins?.has(pos)) throw new RangeError(`position ${pos} is crafted: it cannot be pinned`);
    return (mag[pos] = tune(kind, nom.tunable(v0, span), exact, dir)!);
  };
  // Per thread, its sum before the last term (the tree stage may move the thread's sum through it) and that sum.
  const beforeLast: BlockSum[] = [], leaf = new Float64Array(256);
  for (let t = 0; t < 256; t++) {
    const col = (k: number) => t + 256 * k;
    if (o.pins?.has(col(0))) throw new RangeError(`position ${col(0)} is crafted: it cannot be pinned`);
    mag[col(0)] = kind === "sq" ? tuneSquare(nom.big(t), dir) : nom.big(t);
    const s = new BlockSum();
    s.add(termOf(kind, mag[col(0)]!));
    for (let k = 1; k < K; k++) {
      const v0 = nom.smallAt(col(k));
      if (k === K - 1) beforeLast[t] = s.clone();
      const which = crafted(k, K);
      if (which) tuned(col(k), v0, aim(s, which), k === K - 1 ? LEAF_SPAN + 0.5 : 0.5);
      else mag[col(k)] = v0;
      s.add(termOf(kind, mag[col(k)]!));
    }
    leaf[t] = s.result();
  }
  // The tree: each thread's sum may move by up to LEAF_SPAN ulps (its last term absorbs it, still rounding the
  // chosen way); keep the choice that most increases dir * (tree's sum - exact sum of the thread sums).
  const picked = pickLeaves(leaf, dir);
  for (let t = 0; t < 256; t++) {
    if (picked[t] === leaf[t]) continue;
    const last = t + 256 * (K - 1), s = beforeLast[t]!;
    const v = tune(kind, mag[last]!, (x) => s.resultExact(x), dir, picked[t]);
    if (v !== null) mag[last] = v;
  }
  return measure(signed(mag), nom.small, kind, (w) => emulateRowStats(w, 1, cols));
}

/** The sum `kind` of a line as the kernels compute it (`emulate` gives [sumSq, sum, sumAbs]) and exactly. */
function measure(
  values: Float32Array,
  small: number,
  kind: Term,
  emulate: (w: Float32Array) => Float32Array,
): CraftedLine {
  const got = emulate(values)[kind === "sq" ? 0 : 2]!;
  const exact = exactSum(Array.from(values, (v) => (kind === "sq" ? v * v : Math.abs(v))));
  return { values, small, f32: got, exact, roundings: (got - exact) / exact / 2 ** -24 };
}

/**
 * Thread sums for row_stats.wgsl's tree, each within LEAF_SPAN ulps of `leaf`'s, whose tree rounds as far as
 * coordinate ascent gets in direction `dir` (relative to the exact sum of the thread sums).
 */
function pickLeaves(leaf: Float64Array, dir: Direction): Float64Array {
  // level[l][i]: node i of level l (level 0: the thread sums; level 8: the row's sum), as the kernel adds them.
  const level = [Float64Array.from(leaf)];
  for (let n = 128; n >= 1; n >>= 1) {
    const below = level[level.length - 1]!;
    level.push(Float64Array.from({ length: n }, (_, i) => fr(below[i]! + below[i + n]!)));
  }
  let sum = exactSum(level[0]!);
  // Sets thread t's sum to x and recomputes the 8 nodes above it; returns the tree's rounding error (signed by dir).
  const set = (t: number, x: number) => {
    sum += x - level[0]![t]!;
    level[0]![t] = x;
    for (let l = 1, n = 128; n >= 1; l++, n >>= 1) {
      const i = t % n;
      level[l]![i] = fr(level[l - 1]![i]! + level[l - 1]![i + n]!);
    }
    return dir * (level[8]![0]! - sum);
  };
  let err = dir * (level[8]![0]! - sum);
  for (let sweep = 0; sweep < 4; sweep++) {
    const before = err;
    for (let t = 0; t < 256; t++) {
      const base = leaf[t]!, now = level[0]![t]!;
      let best = now, bestErr = err;
      for (let m = -LEAF_SPAN; m <= LEAF_SPAN; m++) {
        const x = stepF32(base, m);
        if (x === now) continue;
        const e = set(t, x);
        if (e > bestErr) [best, bestErr] = [x, e];
      }
      err = set(t, best);
    }
    if (err <= before) break;
  }
  return level[0]!;
}

/**
 * A quarter of col_stats.wgsl (the 64 rows from r0, through block_sum) as a function of its last term x.
 */
function quarterOf(kind: Term, mag: Float64Array, r0: number): (x: number) => number {
  const s = new BlockSum();
  for (let r = r0; r < r0 + 63; r++) s.add(termOf(kind, mag[r]!));
  return (x) => {
    const q = s.clone();
    q.add(x);
    return q.result();
  };
}

/**
 * A column of `rows` weights whose f32 sum of squares (or of |w|), as col_stats.wgsl and col_reduce.wgsl add it, is
 * off in direction `dir` by as many roundings as this greedy construction reaches. As craftRow, the sum starts from
 * one big term (row 0) so that every rounding that follows is at its scale:
 * - block 0 (rows 0-255), quarter 0: the big square rounds the chosen way, then each row whose addition `crafted`
 *   names (rows 1-7 and the last of each later block of 8: 15, 23, ..., 63) is chosen so that it rounds that way;
 * - quarter 1's last row (127) so that q0 + q1 rounds, quarter 3's (255) so that (q0 + q1) + (q2 + q3) does;
 * - col_reduce then adds the B = rows / 256 block partials through block_sum: for each partial k whose addition
 *   `crafted` names (as craftRow's terms), its quarter 3's last row (256k + 255) is chosen so that that addition
 *   rounds (the other partials' additions are at the small terms' scale).
 * Up to 16 + blockChain(B) roundings (all of them when B's last group and block are both partial, as with
 * B = 64 G - 7): sumChain's column bound.
 */
export function craftColumn(rows: number, o: CraftOptions): CraftedLine {
  checkLength("a column of", rows);
  const { kind, dir } = o;
  const nom = nominal(kind, rows, 1, o);
  const mag = new Float64Array(rows);
  // As craftRow's: a tuned position starts from its draw; pins may not be there.
  const tuned = (pos: number, v0: number, exact: (x: number) => number) => {
    if (o.pins?.has(pos)) throw new RangeError(`position ${pos} is crafted: it cannot be pinned`);
    return (mag[pos] = tune(kind, nom.tunable(v0), exact, dir)!);
  };
  // Every small weight as drawn (or pinned) first; crafting replaces the ones it tunes, in the kernels' order.
  for (let r = 1; r < rows; r++) mag[r] = nom.smallAt(r);
  if (o.pins?.has(0)) throw new RangeError("position 0 is crafted: it cannot be pinned");
  mag[0] = kind === "sq" ? tuneSquare(nom.big(0), dir) : nom.big(0);
  // Block 0, quarter 0: the big term, then the rows whose additions count.
  const s = new BlockSum();
  s.add(termOf(kind, mag[0]!));
  for (let r = 1; r < 64; r++) {
    const which = crafted(r, 64);
    if (which) tuned(r, mag[r]!, aim(s, which));
    s.add(termOf(kind, mag[r]!));
  }
  const q0 = s.result();
  // Quarter 1's last row: q0 + q1 rounds the chosen way.
  const q1of = quarterOf(kind, mag, 64);
  const q1 = q1of(termOf(kind, tuned(127, mag[127]!, (x) => q0 + q1of(x))));
  const a01 = fr(q0 + q1);
  // Quarter 3's last row of block k: its partial is fr(a01 + fr(q2 + q3)) with a01 = q0 + q1 of that block.
  const partialOf = (k: number) => {
    const [qa, qb, q2, q3] = [0, 1, 2, 3].map((i) => quarterOf(kind, mag, 256 * k + 64 * i)) as [Q, Q, Q, Q];
    const ab = k === 0 ? a01 : fr(qa(termOf(kind, mag[256 * k + 63]!)) + qb(termOf(kind, mag[256 * k + 127]!)));
    const c = q2(termOf(kind, mag[256 * k + 191]!));
    // The exact value of the partial's last addition, for last term x; the partial is its f32 rounding.
    return (x: number) => ab + fr(c + q3(x));
  };
  // col_reduce: lib/block_sum.wgsl over the partials, the crafted ones chosen as the header says.
  const B = rows / 256, reduce = new BlockSum();
  for (let k = 0; k < B; k++) {
    const last = 256 * k + 255, exact = partialOf(k), p = (x: number) => fr(exact(x));
    const which = crafted(k, B);
    if (k === 0) tuned(last, mag[last]!, exact);
    else if (which) {
      const into = aim(reduce, which);
      tuned(last, mag[last]!, (x) => into(p(x)));
    }
    reduce.add(p(termOf(kind, mag[last]!)));
  }
  return measure(signed(mag), nom.small, kind, (w) => emulateColStats(w, rows, 1));
}

type Q = (x: number) => number;
