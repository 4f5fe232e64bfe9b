/** The scores of API.md ("Scores") at their edges, through the CPU reference that computes them (pruneLayer). */
import assert from "node:assert/strict";
import type { Method } from "../contract/api.ts";
import { pruneLayer } from "./prune_layer.ts";
import { accumulateSums, mergeColumnSums, newSums, scoreRows } from "./scores.ts";
import { wandaContext } from "../tests/_wanda_context.ts";
import { oracleScores } from "../tests/_oracle.ts";

const F32_MAX = 3.4028234663852886e38; // (2 - 2^-23) * 2^127

/** Prunes half of a [rows, cols] f32 layer with `method` (layer pattern), returning the scores. */
function prune(method: Method, rows: number, cols: number, w: number[], actNormSq: number[] | null, exponent = 1) {
  return pruneLayer(
    { method, pattern: { kind: "layer", sparsity: 0.5 }, exponent, returnWeight: false, returnScore: true },
    {
      name: "l",
      rows,
      cols,
      dtype: "f32",
      weight: new Uint8Array(new Float32Array(w).buffer),
      actNormSq: actNormSq && new Float32Array(actNormSq),
    },
  );
}

Deno.test("wanda: a zero weight under an activation factor past float64 scores 0, never NaN", async () => {
  // act_0 = (1e10)^(64/2) = 1e320: infinity in float64. 0 * infinity would be NaN; the contract's zero weight
  // scores 0, so the zero column (indices 0 and 2) is pruned: scores [0, 1, 0, 2].
  const out = await prune("wanda", 2, 2, [0, 1, 0, 2], [1e10, 1], 64);
  assert.deepEqual(out.mask, new Uint8Array([0b0101]));
  assert.ok(Object.is(out.score![0], 0) && Object.is(out.score![2], 0), `scores ${out.score}`);
  assert.deepEqual(Array.from(out.score!), [0, 1, 0, 2]);
});

Deno.test("ria: a zero weight under an activation factor past float64 scores 0, never NaN", async () => {
  // As for wanda: RIA's zero column scores 0 * (1/0-sum's 0 + 1/row sum) = 0 before act_0 = infinity.
  const out = await prune("ria", 2, 2, [0, 1, 0, 2], [1e10, 1], 64);
  assert.deepEqual(out.mask, new Uint8Array([0b0101]));
  assert.ok(Object.is(out.score![0], 0) && Object.is(out.score![2], 0), `scores ${out.score}`);
});

Deno.test("wanda: a score between float32's largest and the round-to-infinity bound is float32's largest", async () => {
  // act_0 = (1 + 2^-23)^(0.1 / 2) = 1 + 5.96e-9, so score[2] = F32_MAX * act_0 = F32_MAX + 0.2 * 2^103 in float64:
  // above F32_MAX, below the halfway point F32_MAX + 2^103 to the next power 2^128, so it rounds to F32_MAX. Not an
  // overflow: the layer is pruned.
  const out = await prune("wanda", 2, 2, [1, 1, F32_MAX, 1], [1.0000001192092896, 1], 0.1);
  // score[0] = 1 + 6e-9 rounds to 1 in float32 (its next value is 1 + 2^-23): three tied 1s, the first two pruned.
  assert.deepEqual(Array.from(out.score!), [1, 1, F32_MAX, 1]);
  assert.deepEqual(out.mask, new Uint8Array([0b0011]));
});

Deno.test("zpruner: weights equal to 0.1 * mean|W| are not small (strictly less), so alpha is 0.7", async () => {
  // |W| sums to 20 over 4 entries: 0.1 * mean|W| = 0.5 exactly, and the two 0.5s are not below it: s = 0.
  const bound = await prune("zpruner", 2, 2, [0.5, 0.5, 10.5, 8.5], null);
  assert.equal(bound.stats.alpha, 0.7);
  // All zeros: mean|W| = 0 and no |W| is below 0 (0 < 0 is false): s = 0 again, alpha 0.7 (not 0.7 * 0.7 = 0.49,
  // which counting all four as small would give). Every score is 0 (zero norms and zero std give z = 0).
  const zeros = await prune("zpruner", 2, 2, [0, 0, 0, 0], null);
  assert.equal(zeros.stats.alpha, 0.7);
  assert.deepEqual(Array.from(zeros.score!), [0, 0, 0, 0]);
  assert.deepEqual(zeros.mask, new Uint8Array([0b0011]), "ties: the lowest indices first");
});

Deno.test("zpruner: z uses the unbiased std (n - 1), and a spread of one float32 ulp is not a zero std", async () => {
  // One row [1 + 2^-23, 1, 1, 1]. Wc = w / |w| = 1 everywhere: zc = 0 (zero std). Wr = w / norm holds one entry
  // larger by d and three equal ones: mean d / 4, deviations 3d/4 and -d/4, unbiased std sqrt((9 + 3) / 16 d^2 / 3)
  // = d / 2, so |zr| = 1.5 and 0.5, whatever d. No |W| is below 0.1 * mean|W|: alpha = 0.7. Scores: 0.7 * 1.5^3 =
  // 2.3625 and 0.7 * 0.5^3 = 0.0875 (a biased std, n, would give |zr| = sqrt(3) and 1 / sqrt(3)). The spread, 6e-8
  // of the entries' size, is a real one: far above rounding, so it must not count as a zero std.
  const out = await prune("zpruner", 1, 4, [1 + 2 ** -23, 1, 1, 1], null);
  const want = [2.3625, 0.0875, 0.0875, 0.0875];
  for (let i = 0; i < 4; i++) {
    assert.ok(Math.abs(out.score![i]! - want[i]!) <= 1e-6 * want[i]!, `score[${i}] ${out.score![i]} vs ${want[i]}`);
  }
  assert.equal(out.stats.alpha, 0.7);
  // k = floor(0.5 * 4) = 2 of the three tied 0.0875s, lowest indices first.
  assert.deepEqual(out.mask, new Uint8Array([0b0110]));
});

/** The sums of one pass, straight from their definitions (integer weights: exact in any order). */
function plainSums(W: number[], rows: number, cols: number) {
  const at = (r: number, c: number) => W[r * cols + c]!;
  const over = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));
  const sum = (n: number, f: (i: number) => number) => over(n, f).reduce((a, b) => a + b, 0);
  return {
    rowSum: over(rows, (r) => sum(cols, (c) => at(r, c))),
    rowSumSq: over(rows, (r) => sum(cols, (c) => at(r, c) ** 2)),
    rowAbs: over(rows, (r) => sum(cols, (c) => Math.abs(at(r, c)))),
    colSum: over(cols, (c) => sum(rows, (r) => at(r, c))),
    colSumSq: over(cols, (c) => sum(rows, (r) => at(r, c) ** 2)),
    colAbs: over(cols, (c) => sum(rows, (r) => Math.abs(at(r, c)))),
  };
}

Deno.test("accumulateSums() over row blocks, merged by mergeColumnSums(), gives the whole matrix's sums", () => {
  // As the workers do: each block of rows sums into its own MatrixSums (rows at r - r0), and the column sums of the
  // blocks are added up. Integer weights of both signs, so every sum is exact and comparable with ===.
  const rows = 5, cols = 3;
  const W = [3, -1, 0, -2, 4, 1, 0, 0, -5, 6, -7, 2, 1, 1, -1];
  const plain = plainSums(W, rows, cols);
  const W32 = new Float32Array(W);
  for (const method of ["zpruner", "ria"] as const) {
    const blocks = [[0, 2], [2, 3], [3, 5]] as const;
    const merged = newSums(rows, cols, method);
    for (const [r0, r1] of blocks) {
      const s = newSums(r1 - r0, cols, method);
      accumulateSums(method, W32, cols, r0, r1, s);
      if (s.rowSum.length) merged.rowSum.set(s.rowSum, r0);
      if (s.rowSumSq.length) merged.rowSumSq.set(s.rowSumSq, r0);
      merged.rowAbs.set(s.rowAbs, r0);
      mergeColumnSums(merged, s);
    }
    if (method === "zpruner") {
      for (const key of ["rowSum", "rowSumSq", "rowAbs", "colSum", "colSumSq"] as const) {
        assert.deepEqual(Array.from(merged[key]), plain[key], `zpruner ${key}`);
      }
    } else {
      assert.deepEqual(Array.from(merged.rowAbs), plain.rowAbs, "ria rowAbs");
      assert.deepEqual(Array.from(merged.colAbs), plain.colAbs, "ria colAbs");
    }
  }
});

Deno.test("scoreRows() reports the first score that rounds to infinity in float32, exactly at the bound", () => {
  // F32_MAX * (1 + 2^-25 + 2^-49) is, in float64, exactly 2^128 - 2^103: the halfway point past float32's largest,
  // which rounds (to even) to infinity. The oracle: the first i where fround(|w| * act) is infinite (0 * infinity
  // counted as 0). Each case puts it off a row's first and last entry, and the guarded loop (an infinite act) too.
  const atBound = 1 + 2 ** -25 + 2 ** -49, below = 1 + 2 ** -25;
  assert.equal(Math.fround(F32_MAX * atBound), Infinity);
  assert.equal(Math.fround(F32_MAX * below), F32_MAX);
  const cases: { W: number[]; act: number[] }[] = [
    { W: [1, 1, 1, 1, F32_MAX, 1], act: [1, atBound, 1] }, // index 4: mid-row, row 1
    { W: [1, 1, 1, F32_MAX, F32_MAX, 1], act: [2, atBound, 1] }, // index 3 (2 * F32_MAX), then 4
    { W: [1, F32_MAX, 1, 1, 1, F32_MAX], act: [1, below, 1] }, // none: both round to F32_MAX
    { W: [0, 1, 1, 0, F32_MAX, 1], act: [Infinity, atBound, 1] }, // guarded loop: index 4
    { W: [0, F32_MAX, 1, 0, 1, 1], act: [Infinity, 1, 2] }, // guarded loop: none
  ];
  for (const { W, act } of cases) {
    const cols = act.length, rows = W.length / cols;
    const want = W.findIndex((w, i) => {
      const a = act[i % cols]!;
      return Math.fround(w === 0 ? 0 : Math.abs(w) * a) === Infinity;
    });
    const out = new Float32Array(W.length);
    const got = scoreRows(new Float32Array(W), wandaContext(act), 0, rows, out);
    assert.equal(got, want, `W ${W} act ${act}`);
    if (want < 0) {
      const scores = W.map((w, i) => Math.fround(w === 0 ? 0 : Math.abs(w) * act[i % cols]!));
      assert.deepEqual(Array.from(out), scores);
    }
  }
});

Deno.test("ria and zpruner under an activation past float64 score the other columns as the oracle does", async () => {
  // act_0 = (1e10)^(64/2) = 1e320: infinity in float64, which sends the layer down the guarded score loop. Column 0
  // is all zeros and the rows and columns are built to have Wr and Wc of mean exactly 0, so column 0's z-scores (and
  // RIA's terms) are 0 and score 0, not NaN. Every other score must match the slow oracle of tests/_oracle.ts.
  const rows = 2, cols = 5;
  const W = [0, 1, -1, 2, -2, 0, 3, -3, 0.5, -0.5];
  const act = [1e10, 1, 1.5, 0.5, 2];
  for (const method of ["ria", "zpruner"] as const) {
    const out = await prune(method, rows, cols, W, act, 64);
    const { scores } = oracleScores(method, W, rows, cols, act, 64);
    for (let i = 0; i < W.length; i++) {
      const want = Math.fround(scores[i]!);
      assert.ok(
        Math.abs(out.score![i]! - want) <= 1e-6 * want,
        `${method} score[${i}]: ${out.score![i]} vs ${want}`,
      );
    }
  }
});

/** Plain z-scores (mean, unbiased std) of values with a real spread. */
function plainZ(xs: ArrayLike<number>): number[] {
  const a = Array.from(xs);
  const m = a.reduce((x, y) => x + y, 0) / a.length;
  const s = Math.sqrt(a.reduce((x, y) => x + (y - m) ** 2, 0) / (a.length - 1));
  return a.map((x) => (x - m) / s);
}

/** API.md's alpha = 0.7 * (1 - 0.3 * s), s the fraction of |W| strictly below 0.1 * mean|W|. */
function alphaOf(w: ArrayLike<number>): number {
  const a = Array.from(w, Math.abs), bound = 0.1 * (a.reduce((x, y) => x + y, 0) / a.length);
  return 0.7 * (1 - 0.3 * (a.filter((x) => x < bound).length / a.length));
}

/** Z-Pruner scores of a [rows, cols] f32 layer whose weight at (r, c) is f(r, c), and its weights. */
async function zprunerOf(rows: number, cols: number, f: (r: number, c: number) => number) {
  const vals = new Float32Array(rows * cols).map((_, i) => f(Math.floor(i / cols), i % cols));
  return { vals, out: await prune("zpruner", rows, cols, Array.from(vals), null) };
}

Deno.test("zpruner: a tall constant layer has a zero std down its long axis too, so every score is 0", async () => {
  // 40000 x 2, all 0.3: every Wr is 1/sqrt(2) and every Wc 1/sqrt(40000) in exact arithmetic, so both stds are zero
  // and every score is 0; k = 40000 ties go to the lowest indices. Summing 40000 equal row terms into the mean leaves
  // a rounding error that, uncorrected, reads as a spread and gives z-scores of order 1.
  const rows = 40000, cols = 2;
  const { out } = await zprunerOf(rows, cols, () => 0.3);
  assert.equal(out.score!.findIndex((s) => s !== 0), -1, "every score exactly 0");
  assert.ok(out.mask.subarray(0, rows * cols / 16).every((b) => b === 0xff), "the first half pruned");
  assert.ok(out.mask.subarray(rows * cols / 16).every((b) => b === 0), "the second half kept");
});

Deno.test("zpruner: rows each constant give zr = 0; the scores are (1 - alpha) |z|^3 of the raw values", async () => {
  // Row r holds one value v_r in all 7 columns: Wr = v_r / (|v_r| sqrt(7)) is the same for every entry in exact
  // arithmetic (zero std, zr = 0), though rounding leaves the computed entries unequal in their last bits. Each
  // column is the vector (v_r), so Wc is it scaled, and z-scores being scale-invariant, zc = plain z of the raw values.
  const rows = 1000, cols = 7;
  const { vals, out } = await zprunerOf(rows, cols, (r) => Math.fround(0.5 + 0.37 * (r % 50)));
  const z = plainZ(vals), alpha = alphaOf(vals);
  for (let i = 0; i < vals.length; i++) {
    const want = Math.fround((1 - alpha) * Math.abs(z[i]!) ** 3);
    assert.ok(Math.abs(out.score![i]! - want) <= 1e-5 * want, `score[${i}] ${out.score![i]} vs ${want}`);
  }
});

Deno.test("zpruner: equal Wc entries count as a zero std even where Wr's mean is near 0", async () => {
  // Columns each constant (one large, the rest about 1e-9): Wc = 1/sqrt(2) everywhere in exact arithmetic, so zc = 0,
  // while Wr has a real spread but a mean of about 1e-5 of Wc's. What counts as zero is judged against Wc's own
  // size, not Wr's. Both rows are the same, so zr is the plain z of the row's raw values.
  const rows = 2, cols = 100000;
  const { vals, out } = await zprunerOf(rows, cols, (_r, c) => (c === 0 ? 1 : Math.fround(1e-9 * (1 + (c % 97) / 97))));
  const z = plainZ(vals.subarray(0, cols)), alpha = alphaOf(vals);
  for (let i = 0; i < vals.length; i++) {
    const want = Math.fround(alpha * Math.abs(z[i % cols]!) ** 3);
    assert.ok(Math.abs(out.score![i]! - want) <= 1e-5 * want, `score[${i}] ${out.score![i]} vs ${want}`);
  }
});
