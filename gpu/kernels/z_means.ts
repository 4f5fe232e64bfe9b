/** Descriptor of `kernels/z_means.wgsl`: Z-Pruner's means of Wr and Wc and its small-weight bound, on the GPU. */
import source from "../../kernels/z_means.wgsl" with { type: "text" };
import blockSum from "../../kernels/lib/block_sum.wgsl" with { type: "text" };
import normalised from "../../kernels/lib/normalised.wgsl" with { type: "text" };
import { defineKernel } from "../kernel.ts";

/**
 * Slots of the Z-Pruner scalars buffer (f32 each; `small` and `near` hold u32 bits), written by z_means and z_spread:
 * `thrErr` bounds the f32 small-weight bound's error, `near` counts the weights within it, `k` and `rel` bound the
 * z-scores' error (see z_spread.wgsl).
 */
export const Z_SCALARS = {
  meanR: 0,
  meanC: 1,
  thr: 2,
  invStdR: 3,
  invStdC: 4,
  alpha: 5,
  small: 6,
  thrErr: 7,
  near: 8,
  k: 9,
  rel: 10,
} as const;
/** Bytes of the scalars buffer (11 slots, rounded up to 16 bytes). */
export const Z_SCALARS_BYTES = 48;

/** Z-Pruner's means of Wr and Wc and its small-weight bound, from the row and column sums. */
export const zMeans = defineKernel({
  name: "z_means",
  source,
  libs: [blockSum, normalised],
  bindings: ["read", "read", "rw", "uniform"],
  uniforms: [["rows", "u32"], ["cols", "u32"], ["n", "u32"]],
  workgroups: () => 1,
});
