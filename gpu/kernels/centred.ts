/** Descriptor of `kernels/centred.wgsl`: centred sums of squares of Wr and Wc and the small and near-bound counts. */
import source from "../../kernels/centred.wgsl" with { type: "text" };
import normalised from "../../kernels/lib/normalised.wgsl" with { type: "text" };
import spreadTree from "../../kernels/lib/spread_tree.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";
import { CENTRED_BLOCK } from "../blocks.ts";

/** Centred sums of squares of Wr and Wc and the small and near-bound counts, per workgroup of CENTRED_BLOCK. */
export const centred = defineKernel({
  name: "centred",
  source,
  libs: [normalised, spreadTree],
  bindings: ["read", "read", "read", "read", "rw", "uniform"],
  uniforms: [["count", "u32"], ["cols", "u32"], ["row0", "u32"], ["wg0", "u32"]],
  workgroups: (u) => Math.ceil(u.count / CENTRED_BLOCK),
});
