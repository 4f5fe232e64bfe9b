/**
 * The benchmarks' layers: N(0, 0.02²) weights, as trained LLM layers roughly are, made fast enough for 235M elements.
 * Shared by bench/gpu_bench.ts and bench/full_shape_parity.ts, so that the correctness check runs on the same data.
 */
import type { DType } from "../contract/api.ts";
import type { LayerJob } from "../prune/backend.ts";
import { bf16Bits, f16Bits } from "../contract/dtype_codec.ts";

/** A random rows x cols layer of N(0, 0.02²) weights in `dtype`, and positive activations. */
export function llmLayer(rows: number, cols: number, dtype: DType): LayerJob {
  // Draw from a table of 65536 normal samples indexed by a xorshift PRNG: fast enough for 235M weights.
  let s = 0x9e3779b9;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
  const table = new Float32Array(65536);
  for (let i = 0; i < table.length; i++) {
    const u1 = (next() + 1) / 4294967297, u2 = next() / 4294967296;
    table[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2) * 0.02;
  }
  const n = rows * cols;
  let weight: Uint8Array;
  if (dtype === "f32") {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = table[next() & 0xffff]!;
    weight = new Uint8Array(v.buffer);
  } else {
    const bits = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) {
      bits[i] = dtype === "f16" ? f16Bits(table[i]!) : bf16Bits(table[i]!);
    }
    const v = new Uint16Array(n);
    for (let i = 0; i < n; i++) v[i] = bits[next() & 0xffff]!;
    weight = new Uint8Array(v.buffer);
  }
  const act = new Float32Array(cols);
  for (let j = 0; j < cols; j++) act[j] = 0.5 + (next() / 4294967296) * 4;
  return { name: `${rows}x${cols}`, rows, cols, dtype, weight, actNormSq: act };
}
