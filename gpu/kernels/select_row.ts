/** Descriptor of `kernels/select_row.wgsl`: per-row selection, a workgroup per row. */
import source from "../../kernels/select_row.wgsl" with { type: "text" };
import scan256 from "../../kernels/lib/scan_256.wgsl" with { type: "text" };
import lowestSetBits from "../../kernels/lib/lowest_set_bits.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Per-row selection, a workgroup per row. */
export const selectRow = defineKernel({
  name: "select_row",
  source,
  libs: [scan256, lowestSetBits],
  bindings: ["read", "rw", "uniform"],
  uniforms: [["rows", "u32"], ["cols", "u32"], ["base", "u32"], ["k", "u32"]],
  workgroups: (u) => u.rows,
});
