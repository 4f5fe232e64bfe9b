/**
 * The server's estimate of a request's working memory, which it holds against `limits.memoryBudgetBytes` of
 * `GET /v1/info` (413 `too_large` for a request that alone needs more). In the contract module so that clients split
 * their requests by the same arithmetic the server admits them by.
 */
import { type DType, DTYPE_BYTES, type Method } from "./api.ts";

/** A layer as the estimate counts it. */
export interface LayerSize {
  rows: number;
  cols: number;
  /** The weight's wire dtype. */
  dtype: DType;
}

/** What a request asks back besides the masks, and its method (absent: counted as Z-Pruner's, the costliest). */
export interface Returned {
  weight?: boolean;
  score?: boolean;
  method?: Method;
}

// The CPU backend's splitting of a layer (prune/prune_layer.ts), which its working memory follows: defined here, in
// the contract, which the estimate and the backend both import.

/** Most blocks a layer's rows are split into; each pass runs one op per block, spread over the executor's threads. */
export const MAX_BLOCKS = 32;
/** Elements per block below which fewer blocks are used (an op costs a message when it runs on a worker). */
export const BLOCK_MIN_ELEMENTS = 1 << 17;
/**
 * Most parts a layer's scoring and selection are split into; each part of a layer-wide select answers a histogram, and
 * a row pattern's part takes a row's length of u32 scratch.
 */
export const MAX_WORK_PARTS = 64;

/** How many row blocks the CPU backend's sums of a rows x cols layer are taken in: by the shape alone. */
export function layerBlockCount(rows: number, cols: number): number {
  return Math.max(1, Math.min(MAX_BLOCKS, rows, Math.floor((rows * cols) / BLOCK_MIN_ELEMENTS)));
}

/**
 * Bytes of a layer's float64 vectors (per row and per column) at its peak: each row block's partial sums, as a worker
 * makes them, in transit and as received (until merged), the merged sums, their inverses and shared copies, the
 * activations, and a row pattern's per-part scratch. Negligible for a square layer (about 8 MiB at 4096x4096 for
 * zpruner, 1 MiB for magnitude), the largest part of a very wide or very tall one, which the scratch alone
 * undercounted (measured in an audit, f32 Z-Pruner layers, with the allocations already trimmed: 32 x 2M grew the
 * server by 2785 MiB, 16M x 4 by 2532 MiB, against 1056 and 1048 MiB estimated without this).
 */
export function layerVectorBytes(rows: number, cols: number, method: Method = "zpruner"): number {
  const blocks = layerBlockCount(rows, cols);
  // Per row: zpruner's three sums (on the worker, in its message, received, merged) and 1/norm (with a shared copy);
  // ria's sum of |W| so, and its inverse.
  const perRow = method === "zpruner" ? 4 * 24 + 16 : method === "ria" ? 4 * 8 + 16 : 0;
  // Per column: the activations (their sums or decoded actNormSq, act_j and its shared copy; magnitude only checks
  // them); zpruner's two column sums (ria's one) per block, three times over as a block's partials are made, sent and
  // received (measured: 24 to 39 bytes a block for zpruner's), merged, and 1/norm with its shared copy.
  const perCol = method === "magnitude"
    ? 8
    : 32 + (method === "zpruner" ? 48 * blocks + 32 : method === "ria" ? 24 * blocks + 16 : 0);
  return rows * perRow + cols * (perCol + 4 * Math.min(rows, MAX_WORK_PARTS));
}

/**
 * Bytes of one layer's scratch while it is computed: decoded weights and scores in f32, a shared copy of its bytes, the
 * mask, its row and column vectors (`layerVectorBytes`).
 */
export function layerScratchBytes(l: LayerSize, method?: Method): number {
  const n = l.rows * l.cols;
  return n * (8 + DTYPE_BYTES[l.dtype]) + n / 8 + layerVectorBytes(l.rows, l.cols, method);
}

/**
 * Bytes a request needs at its peak: the body it arrived in, the largest layer's scratch (`layerScratchBytes`), and
 * what accumulates for the answer (masks, returned weights and scores) and is copied once more when encoded.
 */
export function workingMemoryBytes(layers: Iterable<LayerSize>, bodyBytes: number, returned: Returned = {}): number {
  let scratch = 0, kept = 0;
  for (const l of layers) {
    const n = l.rows * l.cols;
    const size = DTYPE_BYTES[l.dtype];
    scratch = Math.max(scratch, layerScratchBytes(l, returned.method));
    kept += n / 8 + (returned.score ? 4 * n : 0) + (returned.weight ? size * n : 0);
  }
  return Math.ceil(bodyBytes + scratch + 2 * kept);
}
