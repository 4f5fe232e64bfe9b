/**
 * What grouping a request's layers saves on the WebGPU backend: a request's layers through `runLayers` (as the route
 * runs them) on the backend as it is, whose `pruneTogether` maps each group's read-backs in one await, against the
 * same backend one layer at a time (the peer, measured in the same run, alternating). Masks must agree.
 *
 *   ./node_modules/.bin/deno run -A bench/grouped_layers.ts [--runs R] [--method M] 2>/dev/null
 *
 * Requests: 512 layers of 1x4, 64 of 64x64, and zp-llama-9m's block (q, k, v, o, gate, up, down: 256x256, 128x256,
 * 128x256, 256x256, 768x256, 768x256, 256x768), f16, by `--method` (default zpruner) at 0.5, layer pattern. Prints
 * per request the median milliseconds each way, their ratio, and how many layers took the exact path (both ways
 * alike; each is also named on stderr).
 */
import { parseArgs } from "node:util";
import { type Method, METHODS } from "../contract/api.ts";
import { createWebGpuBackend } from "../gpu/webgpu_backend.ts";
import type { Backend, LayerJob, PruneParams } from "../prune/backend.ts";
import { runLayers } from "../prune/run_layers.ts";
import { randomLayer, rng } from "../tests/_random.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "5" }, method: { type: "string", default: "zpruner" } },
});
const runs = Number(values.runs);
const method = values.method as Method;
if (!(Number.isInteger(runs) && runs >= 1 && METHODS.includes(method))) {
  console.error(`usage: deno run -A bench/grouped_layers.ts [--runs R >= 1] [--method ${METHODS.join("|")}]`);
  Deno.exit(2);
}

const params: PruneParams = {
  method,
  pattern: { kind: "layer", sparsity: 0.5 },
  exponent: 1,
  returnWeight: false,
  returnScore: false,
};

/** A request of layers of `shapes`, f16, seeded. */
function request(shapes: [number, number][], seed: number): LayerJob[] {
  const rand = rng(seed);
  return shapes.map(([rows, cols], i) => ({
    name: `l${i}`,
    rows,
    cols,
    dtype: "f16",
    ...randomLayer(rand, { rows, cols, dtype: "f16" }),
  }));
}

const block: [number, number][] = [[256, 256], [128, 256], [128, 256], [256, 256], [768, 256], [768, 256], [256, 768]];
const requests: [string, LayerJob[]][] = [
  ["512 x 1x4", request(Array(512).fill([1, 4]), 1)],
  ["64 x 64x64", request(Array(64).fill([64, 64]), 2)],
  ["zp-llama-9m block (7)", request(block, 3)],
];

const gpu = await createWebGpuBackend({ allowFallback: true });
if (!gpu) {
  console.error("no WebGPU adapter");
  Deno.exit(1);
}
/** The same backend without `pruneTogether`: runLayers then hands it one layer at a time. */
const single: Backend = {
  kind: gpu.kind,
  device: gpu.device,
  restarts: 0,
  exactPathLayers: 0,
  prune: (p, l, s) => gpu.prune(p, l, s),
  close: () => gpu.close(),
};
const copy = (ls: LayerJob[]) => ls.map((l) => ({ ...l, weight: l.weight.slice(), actNormSq: l.actNormSq!.slice() }));

/** Milliseconds for one request through runLayers on `b`, and its masks. */
async function time(b: Backend, layers: LayerJob[]): Promise<{ ms: number; masks: Uint8Array[] }> {
  const job = copy(layers); // the backend takes ownership of (detaches) what it is given
  const t0 = performance.now();
  const outs = await runLayers(b, params, job, new AbortController().signal, () => {}, 50);
  return { ms: performance.now() - t0, masks: outs.map((o) => o.mask) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`device: ${gpu.device}; ${method}; ${runs} runs each way, alternating, after one warm-up each`);
for (const [name, layers] of requests) {
  const exactBefore = gpu.exactPathLayers;
  await time(gpu, layers);
  await time(single, layers);
  const grouped: number[] = [], alone: number[] = [];
  for (let r = 0; r < runs; r++) {
    const g = await time(gpu, layers), s = await time(single, layers);
    g.masks.forEach((m, i) => {
      if (m.some((b, j) => b !== s.masks[i]![j])) throw new Error(`${name}: layer ${i}'s masks differ`);
    });
    grouped.push(g.ms);
    alone.push(s.ms);
  }
  const [g, s] = [median(grouped), median(alone)];
  console.log(
    `${name}: grouped ${g.toFixed(1)} ms, one at a time ${s.toFixed(1)} ms (${(s / layers.length).toFixed(2)} ` +
      `ms a layer); ${(s / g).toFixed(2)}x; exact path: ${(gpu.exactPathLayers - exactBefore) / (2 * runs + 2)} ` +
      `of ${layers.length} layers a run`,
  );
}
await gpu.close();
