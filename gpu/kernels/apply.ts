/** Descriptor of `kernels/apply.wgsl`: the pruned weights in the request dtype. */
import source from "../../kernels/apply.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** The pruned weights in the request dtype. */
export const apply = defineKernel({
  name: "apply",
  source,
  bindings: ["read", "read", "rw", "uniform"],
  uniforms: [["words", "u32"], ["dtype", "u32"], ["base", "u32"], ["count", "u32"]],
  workgroups: (u) => Math.ceil(u.words / 256),
});
