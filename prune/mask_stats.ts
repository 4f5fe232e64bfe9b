/** Statistics of a bit-packed mask: how many are pruned, overall and per row (API.md, `stats`). */
import type { LayerStats } from "../contract/api.ts";
import { countBits } from "../contract/mask_bits.ts";

/** Pruned counts and row sparsity of a rows x cols mask (bit i row-major, LSB first, 1 = pruned). */
function maskStats(
  mask: Uint8Array,
  rows: number,
  cols: number,
): { pruned: number; rowSparsity: { min: number; max: number; mean: number } } {
  let pruned = 0, minCount = Infinity, maxCount = 0;
  for (let r = 0; r < rows; r++) {
    const count = countBits(mask, r * cols, (r + 1) * cols);
    pruned += count;
    if (count < minCount) minCount = count;
    if (count > maxCount) maxCount = count;
  }
  const total = rows * cols;
  return {
    pruned,
    rowSparsity: {
      min: rows ? minCount / cols : 0,
      max: rows ? maxCount / cols : 0,
      mean: total ? pruned / total : 0,
    },
  };
}

/**
 * A layer's `stats` from its mask, as both backends answer them (threshold and alpha are the caller's to add).
 * `nonFinite` is 0: a layer with a NaN or infinite weight is refused, not pruned.
 */
export function layerStats(mask: Uint8Array, rows: number, cols: number): LayerStats {
  const { pruned, rowSparsity } = maskStats(mask, rows, cols);
  const total = rows * cols;
  return { pruned, total, sparsity: total ? pruned / total : 0, rowSparsity, nonFinite: 0 };
}
