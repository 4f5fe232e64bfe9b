/** Descriptor of `kernels/score.wgsl`: the score of every weight, in place over the decoded weights. */
import source from "../../kernels/score.wgsl" with { type: "text" };
import normalised from "../../kernels/lib/normalised.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** The score of every weight, in place over the decoded weights. */
export const score = defineKernel({
  name: "score",
  source,
  libs: [normalised],
  bindings: ["read", "read", "read", "read", "rw", "rw", "uniform"],
  uniforms: [
    ["count", "u32"],
    ["cols", "u32"],
    ["row0", "u32"],
    ["method", "u32"],
  ],
  workgroups: (u) => Math.ceil(u.count / 256),
});
