/** Descriptor of `kernels/col_reduce.wgsl`: adds the column partials of col_stats. */
import source from "../../kernels/col_reduce.wgsl" with { type: "text" };
import blockSum from "../../kernels/lib/block_sum.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Adds the column partials of col_stats. */
export const colReduce = defineKernel({
  name: "col_reduce",
  source,
  libs: [blockSum],
  bindings: ["read", "rw", "uniform"],
  uniforms: [["cols", "u32"], ["blocks", "u32"]],
  workgroups: (u) => Math.ceil(u.cols / 64),
});
