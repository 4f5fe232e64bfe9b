/** The request parameters tests use where only the machinery matters: magnitude, layer pattern, half pruned. */
import type { PruneParams } from "../prune/backend.ts";

/** Magnitude scores, the layer pattern at sparsity 0.5, masks only (frozen: tests share it). */
export const MAGNITUDE_HALF: PruneParams = Object.freeze({
  method: "magnitude",
  pattern: Object.freeze({ kind: "layer", sparsity: 0.5 }),
  exponent: 1,
  returnWeight: false,
  returnScore: false,
});
