/**
 * The server's estimate of a request's working memory, which it holds against `limits.memoryBudgetBytes` of
 * `GET /v1/info` (413 `too_large` for a request that alone needs more). In the contract module so that clients split
 * their requests by the same arithmetic the server admits them by.
 */
import { type DType, DTYPE_BYTES } from "./api.ts";

/** A layer as the estimate counts it. */
export interface LayerSize {
  rows: number;
  cols: number;
  /** The weight's wire dtype. */
  dtype: DType;
}

/** What a request asks back besides the masks. */
export interface Returned {
  weight?: boolean;
  score?: boolean;
}

/**
 * Bytes a request needs at its peak: the body it arrived in, the largest layer's scratch (decoded weights and scores
 * in f32, a shared copy of its bytes, the mask), and what accumulates for the answer (masks, returned weights and
 * scores) and is copied once more when encoded.
 */
export function workingMemoryBytes(layers: Iterable<LayerSize>, bodyBytes: number, returned: Returned = {}): number {
  let scratch = 0, kept = 0;
  for (const l of layers) {
    const n = l.rows * l.cols;
    const size = DTYPE_BYTES[l.dtype];
    scratch = Math.max(scratch, n * (8 + size) + n / 8);
    kept += n / 8 + (returned.score ? 4 * n : 0) + (returned.weight ? size * n : 0);
  }
  return Math.ceil(bodyBytes + scratch + 2 * kept);
}
