/**
 * col_stats.wgsl and col_reduce.wgsl on their own, against float64 column sums: a row wider than 65535 groups of 64
 * columns (col_stats strides over x, col_reduce flattens over x and y), which the engine no longer sends through them
 * (such rows take the exact path: gpu/f32_safety.ts, sumsBeyondModel), and a block-straddling height.
 */
import assert from "node:assert/strict";
import { GpuEngine } from "../engine.ts";
import { columnSums } from "./_run_kernel.ts";

const engine = await GpuEngine.create({ allowFallback: true });
globalThis.addEventListener("unload", () => engine?.destroy());

Deno.test({
  name: "col_stats + col_reduce: column sums of a row past 65535 groups and of a 600-row matrix match float64",
  ignore: !engine,
  async fn() {
    for (const [rows, cols] of [[1, 65535 * 64 + 33], [600, 70]] as const) {
      // Multiples of 2^-8 below 1/2 (squares of 2^-16 below 1/4): every sum is exact in float64 and in float32.
      const w = new Float32Array(rows * cols).map((_, i) => (((i * 2654435761) >>> 24) - 128) / 256);
      const got = await columnSums(engine!.device, w, rows, cols);
      for (let j = 0; j < cols; j++) {
        let sq = 0, sum = 0, abs = 0;
        for (let r = 0; r < rows; r++) {
          const v = w[r * cols + j]!;
          sq += v * v;
          sum += v;
          abs += Math.abs(v);
        }
        const at = `${rows}x${cols}, column ${j}`;
        // Every partial sum of these values fits f32's 24 bits: the GPU's sums must be exact, whatever their order.
        assert.deepEqual([got[3 * j], got[3 * j + 1], got[3 * j + 2]], [sq, sum, abs], at);
      }
    }
  },
});
