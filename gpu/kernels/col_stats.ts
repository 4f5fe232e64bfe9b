/** Descriptor of `kernels/col_stats.wgsl`: per-column partial sums over blocks of 256 rows. */
import source from "../../kernels/col_stats.wgsl" with { type: "text" };
import blockSum from "../../kernels/lib/block_sum.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";
import { COL_BLOCK_ROWS } from "../blocks.ts";

/** Per-column partial sums over blocks of 256 rows. */
export const colStats = defineKernel({
  name: "col_stats",
  source,
  libs: [blockSum],
  bindings: ["read", "rw", "uniform"],
  uniforms: [["rows", "u32"], ["cols", "u32"], ["block0", "u32"]],
  // Column groups of 64 stride over x (the kernel loops), so x stays within the per-dimension limit.
  workgroups: (u) => [Math.min(Math.ceil(u.cols / 64), 65535), Math.ceil(u.rows / COL_BLOCK_ROWS)],
});
