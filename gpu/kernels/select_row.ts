/** Descriptor of `kernels/select_row.wgsl`: per-row selection, a workgroup per row. */
import source from "../../kernels/select_row.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Per-row selection, a workgroup per row. */
export const selectRow = defineKernel({
  name: "select_row",
  source,
  bindings: ["read", "rw", "uniform"],
  uniforms: [["rows", "u32"], ["cols", "u32"], ["base", "u32"], ["k", "u32"]],
  workgroups: (u) => u.rows,
});
