/** Descriptor of `kernels/select_hist.wgsl`: one digit pass (11 or 10 bits) of the layer-wide radix select. */
import source from "../../kernels/select_hist.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** One digit histogram pass (11 or 10 bits) of the layer-wide radix select. */
export const selectHist = defineKernel({
  name: "select_hist",
  source,
  bindings: ["read", "read", "rw", "uniform"],
  uniforms: [["count", "u32"], ["shift", "u32"], ["hi_mask", "u32"], ["pass_index", "u32"], ["bins", "u32"]],
  workgroups: (u) => Math.ceil(u.count / 8192),
});
