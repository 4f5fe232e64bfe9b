/** Seeded random layers for property tests: any dtype, optional exact ties and zero rows and columns. */
import type { DType } from "../contract/api.ts";
import { seededRandom } from "../model/windows.ts";
import { encode } from "../contract/dtype_codec.ts";

/** mulberry32, the seeded generator model/ uses for calibration windows: one implementation for both. */
export const rng: (seed: number) => () => number = seededRandom;

/** A standard normal draw from a uniform generator (Box-Muller; a draw of 0 is taken as 1e-12). */
export function normal(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(rand() || 1e-12)) * Math.cos(2 * Math.PI * rand());
}

/** Options for a random layer. */
export interface RandomLayerOptions {
  rows: number;
  cols: number;
  dtype: DType;
  /** Draw values from a handful of levels, so many scores tie exactly. */
  ties?: boolean;
  /** Zero some rows and columns entirely. */
  zeros?: boolean;
}

/** A random weight as raw little-endian bytes of `dtype`, and actNormSq as f32. */
export function randomLayer(
  rand: () => number,
  o: RandomLayerOptions,
): { weight: Uint8Array; actNormSq: Float32Array } {
  const n = o.rows * o.cols;
  const levels = [0.5, -0.5, 0.25, 1, -1, 0.125];
  const value =
    () => (o.ties ? levels[Math.floor(rand() * levels.length)]! : (rand() * 2 - 1) * 0.05 * (rand() < 0.1 ? 8 : 1));
  const vals = new Float32Array(n);
  for (let i = 0; i < n; i++) vals[i] = value();
  if (o.zeros) {
    for (let r = 0; r < o.rows; r++) if (rand() < 0.15) vals.fill(0, r * o.cols, (r + 1) * o.cols);
    for (let c = 0; c < o.cols; c++) if (rand() < 0.15) { for (let r = 0; r < o.rows; r++) vals[r * o.cols + c] = 0; }
  }
  const weight = encode(vals, o.dtype);
  const actNormSq = new Float32Array(o.cols);
  for (let c = 0; c < o.cols; c++) {
    actNormSq[c] = o.ties ? [1, 4, 0, 2][c % 4]! : rand() * 20 + (rand() < 0.05 ? 0 : 0.01);
  }
  return { weight, actNormSq };
}
