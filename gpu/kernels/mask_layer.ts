/** Descriptor of `kernels/mask_layer.wgsl`: writes the layer-wide mask with the tie-break by index. */
import source from "../../kernels/mask_layer.wgsl" with { type: "text" };
import scan256 from "../../kernels/lib/scan_256.wgsl" with { type: "text" };
import lowestSetBits from "../../kernels/lib/lowest_set_bits.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";
import { KEY_BLOCK } from "../blocks.ts";

/** Writes the layer-wide mask with the tie-break by index. */
export const maskLayer = defineKernel({
  name: "mask_layer",
  source,
  libs: [scan256, lowestSetBits],
  bindings: ["read", "read", "read", "rw", "uniform"],
  uniforms: [["count", "u32"], ["base", "u32"], ["block0", "u32"]],
  workgroups: (u) => Math.ceil(u.count / KEY_BLOCK),
});
