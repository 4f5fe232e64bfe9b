/** Descriptor of `kernels/select_nm.wgsl`: N:M selection, an invocation per group of M (M <= 64). */
import source from "../../kernels/select_nm.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/**
 * N:M selection, an invocation per group of M (M <= 64), mask words merged in workgroup memory; for Z-Pruner, a count
 * of the groups that f32 z-scores may order otherwise than f64 ones.
 */
export const selectNm = defineKernel({
  name: "select_nm",
  source,
  bindings: ["read", "read", "read", "read", "rw", "rw", "uniform"],
  uniforms: [
    ["groups", "u32"],
    ["m", "u32"],
    ["n", "u32"],
    ["base", "u32"],
    ["cols", "u32"],
    ["check", "u32"],
    ["dtype", "u32"],
  ],
  workgroups: (u) => Math.ceil(u.groups / 256),
});
