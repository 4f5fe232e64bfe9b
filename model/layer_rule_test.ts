import assert from "node:assert/strict";
import { applyLayerRule, maskAtMostKth } from "./layer_rule.ts";
import { ZpruneError } from "../contract/errors.ts";
import type { PruneResponse } from "../contract/api.ts";
import { layerStats } from "../prune/mask_stats.ts";
import { seededRandom as random } from "./windows.ts";

/** Scores with many ties (a few distinct values, zeros of both signs among them) or none to speak of. */
function scores(n: number, rnd: () => number, distinct: number): Float32Array {
  const pool = Float32Array.from(
    { length: distinct },
    (_, i) => (i === 0 ? 0 : i === 1 ? -0 : rnd() * 2 ** (rnd() * 40 - 20)),
  );
  return Float32Array.from({ length: n }, () => (distinct > 0 ? pool[Math.floor(rnd() * distinct)]! : rnd() * 3));
}

/** The reference code's mask, spelled out: sort the scores, take the one at index k, prune every score <= it. */
function oracle(score: Float32Array, k: number): boolean[] {
  const sorted = Array.from(score).sort((a, b) => a - b);
  const t = k < score.length ? sorted[k]! : Infinity;
  return Array.from(score, (s) => s <= t);
}

const bitsOf = (mask: Uint8Array, n: number) =>
  Array.from({ length: n }, (_, i) => ((mask[i >> 3]! >> (i & 7)) & 1) === 1);

Deno.test("maskAtMostKth: every score <= the (k+1)-th lowest, as a sort finds it, ties and both zeros included", () => {
  const rnd = random(7);
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(rnd() * 300);
    const s = scores(n, rnd, [0, 2, 3, 17][trial % 4]!);
    for (const k of [0, Math.floor(rnd() * n), n - 1, n]) {
      const { mask, threshold } = maskAtMostKth(s, k);
      const want = oracle(s, k);
      assert.deepEqual(bitsOf(mask, n), want, `trial ${trial}, n ${n}, k ${k}`);
      assert.equal(mask.length, Math.ceil(n / 8));
      assert.ok(want.filter(Boolean).length >= Math.min(k + 1, n));
      // The threshold is the largest pruned score.
      const largest = Math.max(...Array.from(s).filter((_, i) => want[i]));
      assert.ok(
        threshold === largest && !Object.is(threshold, -0),
        `threshold ${threshold}, largest pruned ${largest}`,
      );
    }
  }
});

Deno.test("maskAtMostKth: the sorted scores' element k, across the 16-bit buckets of the radix passes", () => {
  const rnd = random(11);
  // Values spread over many exponents, so the high 16 bits differ, and runs of equal high halves.
  const s = Float32Array.from(
    { length: 5000 },
    (_, i) => (i % 7 === 0 ? 1 + (i % 13) * 2 ** -20 : rnd() * 2 ** (rnd() * 60 - 30)),
  );
  const sorted = Array.from(s).sort((a, b) => a - b);
  for (const k of [0, 1, 2, 100, 2499, 2500, 4998, 4999]) assert.equal(maskAtMostKth(s, k).threshold, sorted[k]);
  assert.ok(Object.is(maskAtMostKth(new Float32Array([-0, 0, -0]), 2).threshold, 0));
});

Deno.test("maskAtMostKth refuses what its radix passes cannot order: negative or non-finite scores, a bad k", () => {
  for (const bad of [-1, -Infinity, NaN, Infinity]) {
    assert.throws(() => maskAtMostKth(new Float32Array([1, bad, 2]), 0), /^RangeError: score\[1\] is .*, not a finite/);
  }
  for (const k of [-1, 0.5]) assert.throws(() => maskAtMostKth(new Float32Array([1, 2]), k), /^RangeError: k = /);
});

/** An answered layer of `rows` x `cols` whose server pruned the k lowest scores of `score` (ties by index). */
function answered(rows: number, cols: number, score: Float32Array, k: number): PruneResponse["layers"][number] {
  const order = Array.from(score.keys()).sort((a, b) => score[a]! - score[b]! || a - b);
  const mask = new Uint8Array(Math.ceil((rows * cols) / 8));
  for (const i of order.slice(0, k)) mask[i >> 3]! |= 1 << (i & 7);
  return {
    name: "l",
    shape: [rows, cols],
    mask,
    score: { dtype: "f32", shape: [rows, cols], data: new Uint8Array(score.buffer) },
    stats: { ...layerStats(mask, rows, cols), threshold: score[order[k - 1]!]!, alpha: 0.6 },
  };
}

Deno.test("applyLayerRule: le-kth rebuilds mask and stats from the scores at the server's k; exact keeps it", () => {
  // 3 x 4 scores with a three-way tie at the (k+1)-th lowest: k = 4 of 12 at sparsity 1/3, the server's threshold 2.
  const score = new Float32Array([5, 1, 3, 3, 0.5, 7, 3, 2, 9, 0, 8, 6]);
  const layer = answered(3, 4, score, 4);
  assert.equal(layer.stats.threshold, 2);
  const rule = applyLayerRule(layer, "le-kth");
  // Sorted: 0, 0.5, 1, 2, 3, 3, 3, 5, ...; element 4 is 3: every score <= 3 is pruned, seven weights.
  assert.deepEqual(bitsOf(rule.mask, 12), Array.from(score, (s) => s <= 3));
  assert.deepEqual(rule.stats, { ...layerStats(rule.mask, 3, 4), threshold: 3, alpha: 0.6 });
  assert.equal(rule.stats.pruned, 7);
  assert.equal(rule.score, undefined);
  assert.equal(layer.stats.pruned, 4, "the server's answer is left as it was");
  const exact = applyLayerRule(layer, "exact");
  assert.equal(exact.mask, layer.mask);
  assert.deepEqual(exact.stats, layer.stats);
  assert.equal(exact.score, undefined);
});

Deno.test("applyLayerRule: le-kth refuses an answer without usable scores", () => {
  const layer = answered(2, 2, new Float32Array([1, 2, 3, 4]), 2);
  const refused = (l: PruneResponse["layers"][number], re: RegExp) =>
    assert.throws(
      () => applyLayerRule(l, "le-kth"),
      (e) => e instanceof ZpruneError && e.code === "invalid_response" && re.test(e.message),
    );
  refused({ ...layer, score: undefined }, /no f32 score of each weight/);
  refused({ ...layer, score: { ...layer.score!, data: layer.score!.data.subarray(4) } }, /no f32 score/);
  for (const [bad, shown] of [[-1, "-1"], [NaN, "NaN"], [Infinity, "Infinity"]] as const) {
    const data = new Uint8Array(new Float32Array([1, bad, 3, 4]).buffer);
    refused({ ...layer, score: { ...layer.score!, data } }, new RegExp(`score\\[1\\] is ${shown}`));
  }
});
