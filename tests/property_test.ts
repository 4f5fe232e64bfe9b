/**
 * Property tests of the CPU backend against the slow, obvious oracle of tests/_oracle.ts: random shapes from
 * 1x1 to 300x500 (odd sizes), sparsities 0, tiny, 0.5 and 0.99, every pattern, method and dtype, exact ties,
 * zero rows and columns. The inline path and the worker pool must also agree bit for bit.
 */
import assert from "node:assert/strict";
import type { DType, Method, Pattern } from "../contract/api.ts";
import { DEFAULT_EXPONENT } from "../contract/api.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { encode } from "../contract/dtype_codec.ts";
import { bit, compareWithOracle, oracleDecode, oracleScores, oracleSelect } from "./_oracle.ts";
import { randomLayer, rng } from "./_random.ts";

const METHODS: Method[] = ["zpruner", "wanda", "ria", "magnitude"];
const DTYPES: DType[] = ["f32", "f16", "bf16"];

interface Case {
  rows: number;
  cols: number;
  dtype: DType;
  method: Method;
  pattern: Pattern;
  ties: boolean;
  zeros: boolean;
  exponent: number;
}

/** Draws the cases: a fixed seed, so a failure names a reproducible case. */
function cases(count: number, seed: number): Case[] {
  const rand = rng(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!;
  const out: Case[] = [];
  const shapes = [[1, 1], [1, 8], [3, 5], [7, 13], [17, 33], [31, 64], [64, 100], [129, 257], [300, 500], [301, 499]];
  for (let i = 0; i < count; i++) {
    let [rows, cols] = shapes[i % shapes.length]!;
    const kind = pick(["layer", "row", "nm"] as const);
    let pattern: Pattern;
    if (kind === "nm") {
      const [n, m] = pick([[2, 4], [4, 8], [1, 3], [3, 8], [1, 2]]);
      cols = Math.max(m!, Math.round(cols! / m!) * m!);
      pattern = { kind, n: n!, m: m! };
    } else {
      const total = kind === "layer" ? rows! * cols! : cols!;
      pattern = { kind, sparsity: pick([0, 1.5 / total, 0.5, 0.99]) };
    }
    const method = METHODS[i % METHODS.length]!;
    out.push({
      rows: rows!,
      cols: cols!,
      dtype: DTYPES[(i >> 2) % DTYPES.length]!,
      method,
      pattern,
      ties: rand() < 0.3,
      zeros: rand() < 0.3,
      exponent: rand() < 0.8 ? DEFAULT_EXPONENT[method] : pick([0, 1, 2, 3]),
    });
  }
  return out;
}

function describe(c: Case): string {
  const p = c.pattern.kind === "nm" ? `${c.pattern.n}:${c.pattern.m}` : `${c.pattern.kind}@${c.pattern.sparsity}`;
  return `${c.method} ${p} ${c.dtype} ${c.rows}x${c.cols}${c.ties ? " ties" : ""}${
    c.zeros ? " zeros" : ""
  } exp=${c.exponent}`;
}

function build(c: Case, seed: number): { params: PruneParams; layer: LayerJob } {
  const { weight, actNormSq } = randomLayer(rng(seed), c);
  const params: PruneParams = {
    method: c.method,
    pattern: c.pattern,
    exponent: c.exponent,
    returnWeight: true,
    returnScore: true,
  };
  return { params, layer: { name: "p", rows: c.rows, cols: c.cols, dtype: c.dtype, weight, actNormSq } };
}

Deno.test("CPU backend matches the sort-based oracle on 160 random layers", async () => {
  const all = cases(160, 20261128);
  let thresholds = 0;
  for (const [i, c] of all.entries()) {
    const { params, layer } = build(c, i + 1);
    const out = await pruneLayer(params, layer);
    const W = oracleDecode(layer.weight, c.dtype);
    const act = Array.from(layer.actNormSq!);
    const { scores, alpha } = oracleScores(
      c.method,
      W,
      c.rows,
      c.cols,
      c.method === "magnitude" ? null : act,
      c.exponent,
    );
    const sel = oracleSelect(scores, c.rows, c.cols, c.pattern);
    const problems = compareWithOracle(out.mask, scores, sel);
    assert.deepEqual(problems, [], `case ${i}: ${describe(c)}`);
    const expectedPruned = sel.pruned.filter(Boolean).length;
    assert.equal(out.stats.pruned, expectedPruned, `case ${i}: pruned count`);
    assert.equal(out.stats.total, c.rows * c.cols);
    if (alpha !== undefined) assert.ok(Math.abs(out.stats.alpha! - alpha) < 1e-12, `case ${i}: alpha`);
    // API.md: sparsity = pruned / total.
    assert.equal(out.stats.sparsity, expectedPruned / (c.rows * c.cols), `case ${i}: sparsity`);
    // rowSparsity: min and max over the rows of (bits set in the row) / cols, recounted here bit by bit from the
    // mask; the mean over rows of equal length is pruned / total.
    const rowFractions = Array.from({ length: c.rows }, (_, r) => {
      let count = 0;
      for (let j = r * c.cols; j < (r + 1) * c.cols; j++) count += bit(out.mask, j) ? 1 : 0;
      return count / c.cols;
    });
    assert.deepEqual(
      out.stats.rowSparsity,
      { min: Math.min(...rowFractions), max: Math.max(...rowFractions), mean: expectedPruned / (c.rows * c.cols) },
      `case ${i}: rowSparsity`,
    );
    if (c.pattern.kind === "layer") {
      // API.md: for "layer", threshold is the largest pruned score: of the returned scores, exactly the largest
      // where the mask says pruned, and within the ambiguity band of the oracle's k-th lowest score. With k = 0
      // nothing is pruned and there is no such score.
      let largest = -Infinity;
      for (let j = 0; j < c.rows * c.cols; j++) if (bit(out.mask, j)) largest = Math.max(largest, out.score![j]!);
      if (expectedPruned === 0) assert.equal(out.stats.threshold, undefined, `case ${i}: threshold with k = 0`);
      else {
        assert.equal(out.stats.threshold, largest, `case ${i}: threshold is the largest pruned score`);
        thresholds++;
        const t = Math.fround(sel.groups[0]!.threshold);
        assert.ok(
          Math.abs(out.stats.threshold! - t) <= 2e-5 * Math.max(t, 1e-30),
          `case ${i}: threshold ${out.stats.threshold} vs oracle ${t}`,
        );
      }
    }
    // Returned scores are the oracle's, rounded to float32.
    for (let j = 0; j < scores.length; j += Math.max(1, scores.length >> 6)) {
      const want = Math.fround(scores[j]!);
      assert.ok(Math.abs(out.score![j]! - want) <= 1e-6 * Math.max(want, 1e-30), `case ${i}: score[${j}]`);
    }
    // Returned weights are the input with exactly the pruned ones zeroed.
    const back = oracleDecode(out.weight!, c.dtype);
    for (let j = 0; j < W.length; j++) {
      const isPruned = ((out.mask[j >> 3]! >> (j & 7)) & 1) === 1;
      assert.ok(isPruned ? back[j] === 0 : Object.is(back[j], W[j]), `case ${i}: weight[${j}]`);
    }
  }
  assert.ok(thresholds >= 20, `only ${thresholds} cases pruned a "layer" pattern: the threshold went unchecked`);
});

Deno.test("activation entries of -0 count as 0: exactly k pruned, ties by index, no -0 score", async () => {
  // (-0)^(exponent/2) is -0 for exponents 2, 6, 10...; as a float32 key -0 (0x80000000) sorts above every
  // positive score, so without care it is pruned last and breaks "exactly k" and the tie order.
  const patterns: Pattern[] = [
    { kind: "layer", sparsity: 0.25 },
    { kind: "row", sparsity: 0.25 },
    { kind: "nm", n: 2, m: 4 },
    { kind: "nm", n: 1, m: 2 },
  ];
  const rand = rng(0x2d0);
  let checked = 0;
  for (const method of ["wanda", "ria", "zpruner"] as Method[]) {
    for (const pattern of patterns) {
      for (const exponent of [2, 6]) {
        const c: Case = { rows: 9, cols: 16, dtype: "f32", method, pattern, ties: true, zeros: false, exponent };
        const { params, layer } = build(c, 1 + checked);
        for (let j = 0; j < c.cols; j++) if (rand() < 0.4) layer.actNormSq![j] = -0;
        assert.ok(layer.actNormSq!.some((v) => Object.is(v, -0)), "the case has -0 entries");
        const out = await pruneLayer(params, layer);
        const W = oracleDecode(layer.weight, c.dtype);
        // The oracle compares numbers, where -0 === 0: its answer is the contract's.
        const { scores } = oracleScores(method, W, c.rows, c.cols, Array.from(layer.actNormSq!), exponent);
        const sel = oracleSelect(scores, c.rows, c.cols, pattern);
        assert.deepEqual(compareWithOracle(out.mask, scores, sel), [], describe(c));
        assert.equal(out.stats.pruned, sel.pruned.filter(Boolean).length, `${describe(c)}: pruned count`);
        assert.ok(!out.score!.some((v) => Object.is(v, -0)), `${describe(c)}: a score of -0`);
        checked++;
      }
    }
  }
  assert.equal(checked, 24);
});

/** Plain z-scores (mean, unbiased std) of values with a real spread: no zero-std rule is needed or applied. */
function plainZ(xs: number[]): number[] {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const s = Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
  return xs.map((x) => (x - m) / s);
}

Deno.test("Z-Pruner: normalised entries equal in exact arithmetic have a zero std, so z = 0", async () => {
  // One row (every Wc is +-1), one column (every Wr is +-1), rows each constant (every Wr is 1/sqrt(cols)), all
  // equal: rounding leaves those entries unequal in their last bits, which once gave z-scores of order 1.
  // The expectations are derived by hand, not by the oracle (whose zero-std rule copies the backend's): the
  // degenerate axis gives z = 0, and z-scores are scale-invariant, so the other axis's z-scores are those of
  // the raw values (a row, a column, or a column of constant rows), which have a real spread. Every value is
  // over 0.1 * mean |W|, so alpha = 0.7.
  const ALPHA = 0.7;
  const cube = (zs: number[], weight: number) => zs.map((z) => weight * Math.abs(z) ** 3);
  const row = Array.from({ length: 10 }, (_, c) => Math.fround(0.1 + 0.07 * ((c * 7) % 10)));
  const cases: [string, number, number, (r: number, c: number) => number, number[]][] = [
    ["1x10 positive row", 1, 10, (_r, c) => row[c]!, cube(plainZ(row), ALPHA)],
    ["10x1 positive column", 10, 1, (r) => row[r]!, cube(plainZ(row), 1 - ALPHA)],
    [
      "5x3 constant rows",
      5,
      3,
      (r) => r + 1,
      cube(plainZ(Array.from({ length: 15 }, (_, i) => Math.floor(i / 3) + 1)), 1 - ALPHA),
    ],
    ["6x7 all 0.5", 6, 7, () => 0.5, new Array(42).fill(0)],
    // Over a long axis the computed mean's own rounding (not the entries') once left a std above the bound.
    ["2x40000 all 0.3", 2, 40000, () => 0.3, new Array(80000).fill(0)],
  ];
  for (const [what, rows, cols, f, want] of cases) {
    const vals = new Float32Array(rows * cols).map((_, i) => f(Math.floor(i / cols), i % cols));
    for (const pattern of [{ kind: "layer", sparsity: 0.5 }, { kind: "row", sparsity: 0.5 }] as Pattern[]) {
      const params: PruneParams = { method: "zpruner", pattern, exponent: 1.5, returnWeight: false, returnScore: true };
      const layer: LayerJob = { name: what, rows, cols, dtype: "f32", weight: encode(vals, "f32"), actNormSq: null };
      const out = await pruneLayer(params, layer);
      const sel = oracleSelect(want, rows, cols, pattern);
      assert.deepEqual(compareWithOracle(out.mask, want, sel), [], `${what} ${pattern.kind}`);
      for (let i = 0; i < want.length; i++) {
        const w = Math.fround(want[i]!);
        if (w === 0) assert.equal(out.score![i], 0, `${what}: score ${i} must be exactly 0`);
        else assert.ok(Math.abs(out.score![i]! - w) <= 1e-6 * w, `${what}: score ${i} ${out.score![i]} vs ${w}`);
      }
    }
  }
});

Deno.test("CPU worker pool and inline path give identical bits", async () => {
  const backend = createCpuBackend({ threads: 2, parallelMin: 0 });
  try {
    for (const [i, c] of cases(48, 77).entries()) {
      const { params, layer } = build(c, 1000 + i);
      const a = await pruneLayer(params, layer);
      const b = await backend.prune(params, layer);
      assert.deepEqual(b.mask, a.mask, `case ${i}: ${describe(c)}`);
      assert.deepEqual(b.stats, a.stats, `case ${i}: stats`);
      assert.deepEqual(b.score, a.score, `case ${i}: scores`);
    }
  } finally {
    await backend.close();
  }
});

Deno.test("the CPU backend's bits do not depend on thread count (1024x1024: past the worker threshold)", async () => {
  // Weights over 30 binades make float sums order-sensitive: with sums split per worker, 2 workers once gave
  // another mask and other scores than 1 worker or the inline path.
  const rows = 1024, cols = 1024, n = rows * cols;
  const rand = rng(2);
  const vals = new Float32Array(n).map(() => (rand() * 2 - 1) * 2 ** Math.floor(rand() * 30 - 15));
  const actNormSq = new Float32Array(cols).map(() => rand() * 20 + 0.01);
  const backends = [0, 1, 2, 3].map((threads) => createCpuBackend({ threads }));
  try {
    for (
      const [method, dtype, sparsity] of [["zpruner", "bf16", 0.4700798988342285], ["zpruner", "f32", 0.5], [
        "ria",
        "f32",
        0.3,
      ]] as const
    ) {
      const params: PruneParams = {
        method,
        pattern: { kind: "layer", sparsity },
        exponent: DEFAULT_EXPONENT[method],
        returnWeight: false,
        returnScore: true,
      };
      const layer = (): LayerJob => ({
        name: "t",
        rows,
        cols,
        dtype,
        weight: encode(vals, dtype),
        actNormSq: actNormSq.slice(),
      });
      const [ref, ...others] = await Promise.all(backends.map((b) => b.prune(params, layer())));
      for (const [i, o] of others.entries()) {
        const what = `${method} ${dtype}: ${i + 1} thread(s) against inline`;
        assert.deepEqual(o.score, ref!.score, `${what}: scores`);
        assert.deepEqual(o.mask, ref!.mask, `${what}: mask`);
        assert.deepEqual(o.stats, ref!.stats, `${what}: stats`);
      }
    }
  } finally {
    for (const b of backends) await b.close();
  }
});
