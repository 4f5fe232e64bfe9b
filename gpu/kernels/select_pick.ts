/** Descriptor of `kernels/select_pick.wgsl`: picks the digit of the wanted rank after a histogram pass. */
import source from "../../kernels/select_pick.wgsl" with { type: "text" };
import scan256 from "../../kernels/lib/scan_256.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Picks the digit of the wanted rank after a histogram pass. */
export const selectPick = defineKernel({
  name: "select_pick",
  source,
  libs: [scan256],
  bindings: ["read", "rw", "uniform"],
  uniforms: [["pass_index", "u32"], ["shift", "u32"], ["bins", "u32"]],
  workgroups: () => 1,
});
