/**
 * Run by tests/gpu_oom_test.ts under `ulimit -v`, where a software adapter's device memory is this process's address
 * space: fills the device with idle buffers until it refuses, then prunes layers that no longer fit, so that the
 * engine meets real `GPUOutOfMemoryError`s. Prints one JSON line of what happened; the parent asserts on it.
 */
import { ExactPathNeeded, GpuEngine } from "../gpu/engine.ts";
import type { LayerJob } from "../prune/backend.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { randomLayer, rng } from "./_random.ts";
import { MAGNITUDE_HALF } from "./_params.ts";

const engine = await GpuEngine.create({ allowFallback: true });
if (!engine) {
  console.log(JSON.stringify({ adapter: false }));
  Deno.exit(0);
}
await engine.warm();
// As in the server's worker: a layer that needs the exact path is handed back, not computed on this thread.
engine.exactElsewhere = true;

const params = MAGNITUDE_HALF;
const rand = rng(7);
function layer(name: string, rows: number, cols: number): LayerJob {
  // Levels that tie, so the index tie-break is part of what must match.
  const { weight } = randomLayer(rand, { rows, cols, dtype: "f16", ties: true });
  return { name, rows, cols, dtype: "f16", weight, actNormSq: null };
}
const copy = (l: LayerJob): LayerJob => ({ ...l, weight: l.weight.slice() });
const sameMask = async (l: LayerJob, mask: Uint8Array) => {
  const want = (await pruneLayer(params, copy(l))).mask;
  return want.length === mask.length && want.every((b, i) => b === mask[i]);
};

/** Buffers that hold the device's memory (an address-space limit bounds it); `fill` leaves about `headroom` free. */
const hog: GPUBuffer[] = [];
async function fill(headroom: number): Promise<void> {
  // Garbage collected first (the parent passes --expose-gc): memory this process frees later would be room on the
  // device, and a collection's timing would decide whether a layer fits.
  (globalThis as { gc?: () => void }).gc?.();
  const device = engine!.device;
  const largest = Math.floor(Math.min(2 ** 31, device.limits.maxBufferSize) / 256) * 256;
  for (let size = largest; size >= 2 ** 20; size = Math.floor(size / 4 / 256) * 256) {
    for (;;) {
      device.pushErrorScope("out-of-memory");
      device.pushErrorScope("validation");
      const b = device.createBuffer({ label: "hog", size, usage: GPUBufferUsage.STORAGE });
      const invalid = await device.popErrorScope();
      const oom = await device.popErrorScope();
      if (invalid) throw new Error(`a ${size}-byte buffer was refused: ${invalid.message}`); // never an endless loop
      if (oom) {
        b.destroy();
        break;
      }
      hog.push(b);
    }
  }
  for (let freed = 0; freed < headroom;) {
    const b = hog.pop()!;
    freed += b.size;
    b.destroy();
  }
}
const release = () => hog.splice(0).forEach((b) => b.destroy());
const counters = () => ({ oom: engine!.outOfMemory, exact: engine!.exactFallbacks });

// 1. Idle pooled buffers of a larger shape plus the hog fill the device; emptying the pool makes room.
await engine.prune(params, layer("primer", 2048, 2048)); // leaves about 25 MB idle in the pool
const mid = layer("mid", 1024, 1024); // needs about 8 MB, beside the 4-6 MB the hog leaves
const midSent = copy(mid); // made before the fill: the few MB left are not for this process's own arrays
await fill(4 << 20);
const before1 = counters();
const out1 = (await engine.prune(params, midSent)).output;
const retried = { before: before1, after: counters() };
release();
const retriedEqual = await sameMask(mid, out1.mask);

// 2. Nothing pooled is large enough to make room: the layer goes to the exact path, intact.
const big = layer("big", 2048, 4096); // needs about 64 MB: far past the headroom and the pool's few MB
const sent = copy(big);
await fill(4 << 20);
const before2 = counters();
let handedBack: { why: string; intact: boolean } | string = "answered on the GPU";
try {
  await engine.prune(params, sent);
} catch (e) {
  handedBack = e instanceof ExactPathNeeded
    ? { why: e.why, intact: sent.weight.every((b, i) => b === big.weight[i]) }
    : `${e instanceof Error ? e.name : "?"}: ${e instanceof Error ? e.message : String(e)}`;
}
const exact = { before: before2, after: counters(), handedBack };
release();

// 3. With the memory back, the same engine answers that layer on the GPU, as the CPU backend does.
const before3 = counters();
const out3 = (await engine.prune(params, copy(big))).output;
const recovered = { before: before3, after: counters(), equal: await sameMask(big, out3.mask) };

// 4. A job that fails with an error of its own after an allocation ran out: 2:4 on 2050 columns records the stages
// (whose buffers do not fit) before it finds the shape wrong. Its buffers must not reach the pool, or the next layer
// of that shape would be handed a buffer that was never made.
const odd = layer("odd", 2048, 2050);
const oddSent = copy(odd);
await fill(4 << 20);
const wrongShape = await engine.prune({ ...params, pattern: { kind: "nm", n: 2, m: 4 } }, oddSent).then(
  () => "answered",
  (e) => `${(e as { code?: string }).code}: ${(e as Error).message}`,
);
release();
const half = { ...params, pattern: { kind: "nm" as const, n: 1, m: 2 } };
const afterWrong = await engine.prune(half, copy(odd)).then(
  async (o) => (await pruneLayer(half, copy(odd))).mask.every((b, i) => b === o.output.mask[i]) ? "equal" : "differs",
  (e) => `${(e as Error).message}`,
);

engine.destroy();
console.log(JSON.stringify({
  adapter: true,
  retried: { ...retried, equal: retriedEqual },
  exact,
  recovered,
  poisoned: { wrongShape, afterWrong },
}));
