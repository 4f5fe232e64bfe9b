/** Descriptor of `kernels/col_stats.wgsl`: per-column partial sums over blocks of 256 rows. */
import source from "../../kernels/col_stats.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Per-column partial sums over blocks of 256 rows. */
export const colStats = defineKernel({
  name: "col_stats",
  source,
  bindings: ["read", "rw", "uniform"],
  uniforms: [["rows", "u32"], ["cols", "u32"], ["block0", "u32"]],
  workgroups: (u) => [Math.ceil(u.cols / 256), Math.ceil(u.rows / 256)],
});
