/** Descriptor of `kernels/row_stats.wgsl`: per-row sums of W², W and |W|, a workgroup per row. */
import source from "../../kernels/row_stats.wgsl" with { type: "text" };
import blockSum from "../../kernels/lib/block_sum.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Per-row sums of W², W and |W|, a workgroup per row. */
export const rowStats = defineKernel({
  name: "row_stats",
  source,
  libs: [blockSum],
  bindings: ["read", "rw", "uniform"],
  uniforms: [["rows", "u32"], ["cols", "u32"], ["row0", "u32"]],
  workgroups: (u) => u.rows,
});
