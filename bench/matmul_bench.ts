/**
 * `deno task bench:matmul`: the forward pass's SIMD matmul (model/matmul.wat) with float32 weights against the same
 * weights kept as bf16 and as f16 (widened to float32 as they are read: the same products, half the memory), on one
 * thread, for a window of 256 tokens times the linear layers of the bundled model and of a Llama 3.2 1B block. Prints
 * the median of --repeat runs (default 7) per case and each 16-bit kernel's time as a ratio to float32's in the same
 * run; also checks that the three give the same bits.
 */
import { Arena, matmul, type WeightMatrix } from "../model/ops.ts";
import { encode } from "../contract/dtype_codec.ts";

const repeat = Number(Deno.args[Deno.args.indexOf("--repeat") + 1] ?? 7);
if (Deno.args.includes("--repeat") && !(Number.isInteger(repeat) && repeat >= 1)) {
  console.error("usage: deno task bench:matmul [--repeat N]");
  Deno.exit(2);
}
const T = 256;
// [rows (output features), cols (input features)]: zp-llama-9m's MLP, Llama 3.2 1B's q_proj and gate_proj.
const SHAPES: [number, number][] = [[688, 256], [2048, 2048], [8192, 2048]];

/** Median of `fn`'s wall time over `repeat` runs, after one warm-up, in ms. */
function median(fn: () => void): number {
  fn();
  const times = Array.from({ length: repeat }, () => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  }).sort((a, b) => a - b);
  return times[Math.floor(repeat / 2)]!;
}

console.log(`matmul, ${T} tokens x weights [rows, cols], one thread, median of ${repeat} (ms)`);
console.log("| weights | float32 | bf16 | f16 | bf16 / float32 | f16 / float32 |");
console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
for (const [d, n] of SHAPES) {
  const arena = new Arena(T * n * 4 + d * n * 8 + 3 * T * d * 4 + 4096);
  const x = arena.f32(T * n), w = arena.f32(d * n);
  const bf = { dtype: "bf16" as const, data: arena.u16(d * n) },
    f16 = { dtype: "f16" as const, data: arena.u16(d * n) };
  x.forEach((_, i) => (x[i] = Math.sin(i)));
  // Weights every format holds exactly (|w| < 0.25 in steps of 1/1024: 8 significant bits, normal in f16), so all
  // three multiply the same values.
  for (let i = 0; i < w.length; i++) w[i] = ((i * 2654435761) % 511 - 255) / 1024;
  bf.data.set(new Uint16Array(encode(w, "bf16").buffer));
  f16.data.set(new Uint16Array(encode(w, "f16").buffer));
  const outs = [arena.f32(T * d), arena.f32(T * d), arena.f32(T * d)];
  const ms = ([w, bf, f16] as WeightMatrix[]).map((m, k) => median(() => matmul(outs[k]!, x, m, T, n, d)));
  const bits = outs.map((o) => new Uint32Array(o.buffer, o.byteOffset, o.length));
  if (!bits.every((b) => b.every((v, i) => v === bits[0]![i]))) throw new Error(`[${d}, ${n}]: the kernels differ`);
  const f = (v: number) => v.toFixed(1);
  console.log(
    `| [${d}, ${n}] | ${f(ms[0]!)} | ${f(ms[1]!)} | ${f(ms[2]!)} | ${(ms[1]! / ms[0]!).toFixed(2)} | ` +
      `${(ms[2]! / ms[0]!).toFixed(2)} |`,
  );
}
