/** Descriptor of `kernels/tie_count.wgsl`: counts keys equal to the threshold per block of 8192. */
import source from "../../kernels/tie_count.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";
import { KEY_BLOCK } from "../blocks.ts";

/** Counts keys equal to the threshold per block of 8192. */
export const tieCount = defineKernel({
  name: "tie_count",
  source,
  bindings: ["read", "read", "rw", "uniform"],
  uniforms: [["count", "u32"], ["block0", "u32"]],
  workgroups: (u) => Math.ceil(u.count / KEY_BLOCK),
});
