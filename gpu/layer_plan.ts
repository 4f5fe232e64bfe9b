/**
 * The plan of one layer on the GPU, before any GPU work: its row-tiles (matrices over the storage-binding limit are
 * cut into tiles of whole rows) and the sizes of the whole-layer arrays that span all tiles, or why the layer must take
 * the exact CPU path on this device. Pure arithmetic, so it is tested without an adapter.
 */
import { ZpruneError } from "../contract/errors.ts";
import { DTYPE_BYTES } from "../contract/api.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { poolSize } from "./buffer_pool.ts";
import { sumsBeyondModel } from "./f32_safety.ts";
import { CENTRED_BLOCK, COL_BLOCK_ROWS, KEY_BLOCK } from "./blocks.ts";

/** Bytes of one `centred` workgroup's partials: two f32 sums of squares, the small and near counts. */
export const CENTRED_PART_BYTES = 16;
/**
 * Largest M that select_nm ranks with a thread per group; larger groups go through select_row (the request schema
 * allows M up to 9999).
 */
export const NM_THREAD_MAX_M = 64;
/**
 * Widest row that select_row ranks, a workgroup per row (the `row` pattern); wider rows take the exact path. lavapipe
 * (llvmpipe's shader compiler) ends an invocation's loops, all of them together, after 65,535 iterations, silently:
 * the kernel then answers a mask with too few pruned. Each select_row thread iterates about 3·cols/256 times over
 * its digit passes and 73 times per segment of 8192 (32 keys, up to 32 tie-break steps, 8 scan steps, the loop
 * itself), 0.0206·cols in all: measured to fail there between 3.10M and 3.25M columns, as this predicts (3.17M).
 * 2^21 is about 43,400 iterations, two thirds of the cap; rows this wide are not an LLM's (tens of thousands).
 */
export const ROW_SELECT_MAX_COLS = 2 ** 21;

/** One row-tile of a layer: rows [row0, row0 + rows), elements [base, base + count). */
export interface Tile {
  index: number;
  row0: number;
  rows: number;
  base: number;
  count: number;
  /** Global index of the tile's first block of 256 rows (col_stats). */
  colBlock0: number;
  /** Global index of the tile's first block of 8192 keys (tie_count, mask_layer). */
  keyBlock0: number;
  /** Global index of the tile's first `centred` workgroup. */
  centredWg0: number;
}

/** What the stages of one layer share: the request, the layer, its tile plan and its whole-layer sizes. */
export interface LayerPlan {
  readonly params: PruneParams;
  readonly layer: LayerJob;
  /** Elements of the layer (at least 1, below 2^32). */
  readonly n: number;
  /** Bytes of one raw weight in the layer's dtype. */
  readonly size: number;
  readonly tiles: readonly Tile[];
  /** Blocks of 256 rows (col_stats), blocks of 8192 keys (tie_count, mask_layer), `centred` workgroups: all tiles. */
  readonly colBlocks: number;
  readonly keyBlocks: number;
  readonly centredWgs: number;
  readonly maskBytes: number;
  /** The method when it uses row and column sums, else null (narrowed for the checks after read-back). */
  readonly statsMethod: "zpruner" | "ria" | null;
  /** N:M ranked by select_nm, a thread per group (M up to NM_THREAD_MAX_M); false for other patterns. */
  readonly nmThread: boolean;
}

/** The device's limits that shape a plan. */
export interface PlanLimits {
  /** Largest bytes of one row-tile as f32 (a multiple of 256). */
  readonly tileBytes: number;
  /** The storage-binding limit in force: each whole-layer array must fit one binding. */
  readonly bindingBytes: number;
}

/**
 * Cuts rows x cols into tiles of whole rows, each at most `tileBytes` as f32, and whole blocks of 256 rows where a
 * tile holds one.
 */
export function planTiles(rows: number, cols: number, tileBytes: number): Tile[] {
  // col_stats dispatches ceil(rows/256) workgroups on y, at most 65535. A tile ending inside a block of 256 rows would
  // add a column partial, and a rounding to every column's chain (f32_safety.ts, sumChain).
  const fit = Math.min(Math.floor(tileBytes / (cols * 4)), 65535 * COL_BLOCK_ROWS);
  const perTile = fit >= COL_BLOCK_ROWS ? fit - (fit % COL_BLOCK_ROWS) : fit;
  if (perTile < 1 && rows > 0) {
    throw new RangeError(`a row of ${cols} f32 values does not fit a ${tileBytes}-byte tile`);
  }
  const tiles: Tile[] = [];
  let colBlock0 = 0, keyBlock0 = 0, centredWg0 = 0;
  for (let row0 = 0; row0 < rows; row0 += perTile) {
    const r = Math.min(perTile, rows - row0);
    const count = r * cols;
    tiles.push({ index: tiles.length, row0, rows: r, base: row0 * cols, count, colBlock0, keyBlock0, centredWg0 });
    colBlock0 += Math.ceil(r / COL_BLOCK_ROWS);
    keyBlock0 += Math.ceil(count / KEY_BLOCK);
    centredWg0 += Math.ceil(count / CENTRED_BLOCK);
  }
  return tiles;
}

/**
 * The tile plan of a layer with elements, or why it takes the exact path (it does not fit the device's storage
 * bindings, or its f32 sums would be too long); throws `too_large` for 2^32 elements or more.
 */
export function planLayer(params: PruneParams, layer: LayerJob, limits: PlanLimits): LayerPlan | string {
  const { rows, cols, dtype, name } = layer;
  const { tileBytes, bindingBytes } = limits;
  const n = rows * cols;
  const { method, pattern } = params;
  // Unreachable through the server (ZPRUNE_MAX_LAYER_ELEMENTS stops below 2^32); both backends index in 32 bits.
  if (n >= 2 ** 32) throw new ZpruneError("too_large", `layer ${name}: ${n} elements, 2^32 or more`);
  // Unreachable through the server too (shapes are at least 1x1); the CPU backend's answer is the one to give.
  if (n === 0) return "a layer without elements";
  // A layer the contract accepts but this device cannot hold is answered too, on the exact CPU path.
  if (cols * 4 > tileBytes) return `a row of ${cols} columns, over the device's ${tileBytes}-byte tiles`;
  if (pattern.kind === "row" && cols > ROW_SELECT_MAX_COLS) {
    return `a row of ${cols} columns, over the ${ROW_SELECT_MAX_COLS} that select_row ranks in one workgroup`;
  }
  const tiles = planTiles(rows, cols, tileBytes);
  const last = tiles[tiles.length - 1]!;
  const colBlocks = last.colBlock0 + Math.ceil(last.rows / COL_BLOCK_ROWS);
  // Before any GPU work: f32 sums this long may leave the band whatever the values (f32_safety.ts).
  const beyond = sumsBeyondModel(method, { rows, cols, colBlocks });
  if (beyond) return beyond;
  const keyBlocks = last.keyBlock0 + Math.ceil(last.count / KEY_BLOCK);
  const centredWgs = last.centredWg0 + Math.ceil(last.count / CENTRED_BLOCK);
  const maskBytes = Math.ceil(n / 32) * 4;
  const statsMethod = method === "zpruner" || method === "ria" ? method : null;
  // The whole-layer arrays are not tiled: each must fit one binding. Only those this method and pattern use count.
  const globals: [string, number][] = [["mask", maskBytes]];
  if (statsMethod !== null) {
    globals.push(["column partials", colBlocks * cols * 12], ["row statistics", rows * 12]);
    globals.push(["column statistics", cols * 12]);
  }
  if (method === "zpruner") globals.push(["centred partials", centredWgs * CENTRED_PART_BYTES]);
  if (method !== "magnitude") globals.push(["activations", cols * 8]);
  if (pattern.kind === "layer") globals.push(["tie counts", keyBlocks * 4]);
  const over = globals.find(([, bytes]) => poolSize(bytes) > bindingBytes);
  if (over) return `its ${over[0]} need ${over[1]} bytes, over the device's ${bindingBytes}-byte storage bindings`;
  const size = DTYPE_BYTES[dtype];
  const nmThread = pattern.kind === "nm" && pattern.m <= NM_THREAD_MAX_M;
  return { params, layer, n, size, tiles, colBlocks, keyBlocks, centredWgs, maskBytes, statsMethod, nmThread };
}
