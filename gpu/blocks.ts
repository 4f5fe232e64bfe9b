/**
 * The block sizes that the kernels and the layer plan share: a kernel's workgroups each take one block, and the plan
 * numbers the blocks over the tiles of a layer (a tile's first block) and sizes the arrays of per-block partials.
 * The WGSL files write the same numbers as literals (WGSL has no imports); `blocks_test.ts` checks that they agree.
 */

/** Rows per block of `col_stats.wgsl` (its column partials). */
export const COL_BLOCK_ROWS = 256;
/** Keys per block of `tie_count.wgsl` and `mask_layer.wgsl` (one tie count each). */
export const KEY_BLOCK = 8192;
/** Elements per `centred.wgsl` workgroup (one partial each). */
export const CENTRED_BLOCK = 16384;
