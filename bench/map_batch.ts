/**
 * What Deno's `mapAsync` costs per read-back, one at a time (as the engine reads back each layer) against several
 * submitted first and then awaited together: the lead for a worker that would read back a request's small layers
 * together. Each of `--maps` (default 20) staging buffers of 256 bytes gets a copy from one source buffer.
 *
 *   ./node_modules/.bin/deno run -A bench/map_batch.ts [--maps N] [--runs R]
 *
 * Prints, per run, the milliseconds per map each way and their ratio (the peer: the sequential way, in the same run).
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: { maps: { type: "string", default: "20" }, runs: { type: "string", default: "3" } },
});
const maps = Number(values.maps), runs = Number(values.runs);
if (!(Number.isInteger(maps) && maps >= 1 && Number.isInteger(runs) && runs >= 1)) {
  console.error("usage: deno run -A bench/map_batch.ts [--maps N >= 1] [--runs R >= 1]");
  Deno.exit(2);
}
const adapter = await navigator.gpu.requestAdapter();
if (!adapter) {
  console.error("no WebGPU adapter");
  Deno.exit(1);
}
const device = await adapter.requestDevice({ label: "map_batch" });
const src = device.createBuffer({ label: "source", size: 256, usage: GPUBufferUsage.COPY_SRC });
const staging = Array.from(
  { length: maps },
  (_, i) =>
    device.createBuffer({ label: `staging ${i}`, size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
);

/** Submits the copy into staging buffer `i`. */
function copyInto(i: number): void {
  const enc = device.createCommandEncoder({ label: `copy ${i}` });
  enc.copyBufferToBuffer(src, 0, staging[i]!, 0, 256);
  device.queue.submit([enc.finish()]);
}

console.log(`adapter: ${adapter.info.description || adapter.info.vendor}, ${maps} maps a way`);
for (let run = 0; run < runs; run++) {
  let t0 = performance.now();
  for (let i = 0; i < maps; i++) {
    copyInto(i);
    await staging[i]!.mapAsync(GPUMapMode.READ);
    staging[i]!.unmap();
  }
  const one = (performance.now() - t0) / maps;
  t0 = performance.now();
  for (let i = 0; i < maps; i++) copyInto(i);
  await Promise.all(staging.map((s) => s.mapAsync(GPUMapMode.READ)));
  const together = (performance.now() - t0) / maps;
  for (const s of staging) s.unmap();
  console.log(
    `run ${run + 1}: one at a time ${one.toFixed(2)} ms a map, awaited together ${together.toFixed(2)} ms a map ` +
      `(${(one / together).toFixed(1)}x)`,
  );
}
device.destroy();
