/** Descriptor of `kernels/tie_scan.wgsl`: exclusive scan of the per-block tie counts. */
import source from "../../kernels/tie_scan.wgsl" with { type: "text" };
import scan256 from "../../kernels/lib/scan_256.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Exclusive scan of the per-block tie counts. */
export const tieScan = defineKernel({
  name: "tie_scan",
  source,
  libs: [scan256],
  bindings: ["read", "rw", "uniform"],
  uniforms: [["blocks", "u32"]],
  workgroups: () => 1,
});
