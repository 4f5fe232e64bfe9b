/**
 * The kernel descriptors, one per `kernels/NAME.wgsl` (each in `NAME.ts` here), and `KERNELS`, all of them in one
 * list, for what must cover every kernel (compiling them ahead of the first request).
 */
import type { KernelDef } from "../kernel.ts";
import { apply } from "./apply.ts";
import { centred } from "./centred.ts";
import { colReduce } from "./col_reduce.ts";
import { colStats } from "./col_stats.ts";
import { decode } from "./decode.ts";
import { maskLayer } from "./mask_layer.ts";
import { rowStats } from "./row_stats.ts";
import { score } from "./score.ts";
import { selectHist } from "./select_hist.ts";
import { selectNm } from "./select_nm.ts";
import { selectPick } from "./select_pick.ts";
import { selectRow } from "./select_row.ts";
import { tieCount } from "./tie_count.ts";
import { tieScan } from "./tie_scan.ts";
import { zMeans } from "./z_means.ts";
import { zSpread } from "./z_spread.ts";

export {
  apply,
  centred,
  colReduce,
  colStats,
  decode,
  maskLayer,
  rowStats,
  score,
  selectHist,
  selectNm,
  selectPick,
  selectRow,
  tieCount,
  tieScan,
  zMeans,
  zSpread,
};
export { Z_SCALARS, Z_SCALARS_BYTES } from "./z_means.ts";

/** Every kernel (kernel_test.ts checks that it names each `kernels/*.wgsl` once). */
export const KERNELS: readonly KernelDef[] = [
  decode,
  rowStats,
  colStats,
  colReduce,
  centred,
  score,
  selectHist,
  selectPick,
  tieCount,
  tieScan,
  maskLayer,
  selectRow,
  selectNm,
  apply,
  zMeans,
  zSpread,
];
