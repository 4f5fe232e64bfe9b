/**
 * Descriptor of `kernels/z_spread.wgsl`: Z-Pruner's 1/std of Wr and Wc, small-weight count, alpha and the z-scores'
 * error bound, on the GPU.
 */
import source from "../../kernels/z_spread.wgsl" with { type: "text" };
import spreadTree from "../../kernels/lib/spread_tree.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Z-Pruner's 1/std of Wr and Wc, small-weight count, alpha and error bound, from the centred partials. */
export const zSpread = defineKernel({
  name: "z_spread",
  source,
  libs: [spreadTree],
  bindings: ["read", "rw", "uniform"],
  uniforms: [
    ["count", "u32"],
    ["n", "u32"],
    ["shift", "f32"],
    ["floor", "f32"],
    ["z_rel", "f32"],
    ["alpha_rel", "f32"],
    ["near_cap", "u32"],
  ],
  workgroups: () => 1,
});
