/**
 * Run by prune/prune_layer_test.ts under --expose-gc: prunes one f32 layer (args: method, pattern, rows, cols) on the
 * CPU backend's worker pool (2 workers) and prints on stdout the growth of the process's peak resident memory while it
 * computed (Linux: /proc/self/status, the peak reset through /proc/self/clear_refs) beside the server's estimate of
 * that layer's working memory without a body: `{"name": ..., "growth": ..., "estimate": ...}`.
 */
import type { Method } from "../contract/api.ts";
import { workingMemoryBytes } from "../contract/working_memory.ts";
import { createPoolExecutor } from "../prune/cpu_backend.ts";
import { pruneLayerWith } from "../prune/prune_layer.ts";
import { parsePattern } from "../contract/api.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const kb = (key: string) =>
  Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;

/** Prunes a rows x cols f32 layer (activations all ones) with `method` and `pattern`; answers the peak's growth. */
async function layer(method: Method, pattern: string, rows: number, cols: number, sparsity = 0.5) {
  const exec = createPoolExecutor(2);
  await warm(exec); // the workers started, code compiled: what grows after is the layer's
  const n = rows * cols;
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = Math.sin(i * 0.7) + 0.01 * (i % 13); // every page touched before the baseline
  const job = {
    name: "w",
    rows,
    cols,
    dtype: "f32" as const,
    weight: new Uint8Array(w.buffer),
    actNormSq: method === "magnitude" ? null : new Float32Array(cols).fill(1),
  };
  const params = {
    method,
    pattern: parsePattern(pattern, sparsity),
    exponent: 1,
    returnWeight: false,
    returnScore: false,
  };
  for (let k = 0; k < 3; k++) gc!();
  Deno.writeTextFileSync("/proc/self/clear_refs", "5");
  const before = kb("VmRSS");
  await pruneLayerWith(exec, params, job);
  exec.close();
  return {
    name: `${method} ${pattern} ${rows}x${cols}`,
    growth: kb("VmHWM") - before,
    estimate: workingMemoryBytes([{ rows, cols, dtype: "f32" }], 0, { method }),
  };
}

/** A small layer through `exec`'s workers. */
async function warm(exec: ReturnType<typeof createPoolExecutor>): Promise<void> {
  const w = new Float32Array(512 * 1024).map((_, i) => Math.sin(i));
  const params = { method: "zpruner" as const, pattern: parsePattern("layer", 0.5), exponent: 1.5 };
  await pruneLayerWith(exec, { ...params, returnWeight: false, returnScore: false }, {
    name: "warm",
    rows: 512,
    cols: 1024,
    dtype: "f32",
    weight: new Uint8Array(w.buffer),
    actNormSq: null,
  });
}

const [method, pattern, rows, cols] = [
  Deno.args[0] as Method,
  Deno.args[1]!,
  Number(Deno.args[2]),
  Number(Deno.args[3]),
];
console.log(JSON.stringify(await layer(method, pattern, rows, cols)));
