/** The scores of API.md ("Scores") at their edges, through the CPU reference that computes them (pruneLayer). */
import assert from "node:assert/strict";
import type { Method } from "../contract/api.ts";
import { pruneLayer } from "./prune_layer.ts";

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
