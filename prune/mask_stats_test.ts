import assert from "node:assert/strict";
import { layerStats } from "./mask_stats.ts";

/** A bit-packed mask (bit i row-major, least significant bit first) with the given indices set. */
function maskOf(n: number, pruned: number[]): Uint8Array {
  const mask = new Uint8Array(Math.ceil(n / 8));
  for (const i of pruned) mask[i >> 3]! |= 1 << (i & 7);
  return mask;
}

Deno.test("layerStats(): counts, sparsity and per-row min / max / mean of rows not byte-aligned", () => {
  // 3 x 5: row 0 prunes columns 1 and 4 (2 of 5), row 1 none, row 2 all 5 (bits 10..14 straddle a byte boundary).
  const stats = layerStats(maskOf(15, [1, 4, 10, 11, 12, 13, 14]), 3, 5);
  assert.deepEqual(stats, {
    pruned: 7,
    total: 15,
    sparsity: 7 / 15,
    rowSparsity: { min: 0, max: 1, mean: 7 / 15 },
    nonFinite: 0,
  });
  // Rows of 3 and 1 pruned of 4 in a wide-enough layer: min and max are fractions of cols, not of rows.
  const two = layerStats(maskOf(8, [0, 1, 2, 7]), 2, 4);
  assert.deepEqual(two.rowSparsity, { min: 1 / 4, max: 3 / 4, mean: 4 / 8 });
  assert.equal(two.sparsity, 0.5);
});

Deno.test("layerStats(): a mask with nothing pruned has every fraction 0", () => {
  const stats = layerStats(new Uint8Array(3), 4, 5);
  assert.deepEqual(stats, {
    pruned: 0,
    total: 20,
    sparsity: 0,
    rowSparsity: { min: 0, max: 0, mean: 0 },
    nonFinite: 0,
  });
});

Deno.test("layerStats(): an empty layer (the GPU path's placeholder) has stats of 0, never NaN or infinity", () => {
  // gpu/layer_answer.ts builds a placeholder's stats from layerStats(new Uint8Array(0), 0, 0): they must encode as
  // plain finite numbers.
  const stats = layerStats(new Uint8Array(0), 0, 0);
  assert.deepEqual(stats, { pruned: 0, total: 0, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 });
});
