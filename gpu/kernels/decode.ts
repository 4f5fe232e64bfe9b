/** Descriptor of `kernels/decode.wgsl`: raw weights to f32, with the first non-finite index. */
import source from "../../kernels/decode.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/** Raw weights to f32, with the first non-finite index. */
export const decode = defineKernel({
  name: "decode",
  source,
  bindings: ["read", "rw", "rw", "uniform"],
  uniforms: [["count", "u32"], ["dtype", "u32"], ["base", "u32"]],
  workgroups: (u) => Math.ceil(u.count / 256),
});
