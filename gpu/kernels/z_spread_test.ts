/**
 * z_spread.wgsl against the host's error model (gpu/f32_safety.ts): the k and rel that select_nm.wgsl checks its
 * groups with must be what zSafeThreshold uses for layer and row, or the two patterns would trust f32 differently.
 */
import assert from "node:assert/strict";
import { GpuEngine } from "../engine.ts";
import { ALPHA_CAP, ALPHA_REL, Z_REL, zErrorModel, zSpreadModel } from "../f32_safety.ts";
import { dispatchKernel, submitAndRead } from "./_run_kernel.ts";
import { Z_SCALARS, Z_SCALARS_BYTES } from "./z_means.ts";
import { zSpread } from "./z_spread.ts";

const engine = await GpuEngine.create({ allowFallback: true });
globalThis.addEventListener("unload", () => engine?.destroy());

/**
 * Runs z_spread for a layer of n weights on one partial ([Σ(Wr − mean)², Σ(Wc − mean)², small, near]) with the given
 * means; its scalars.
 */
async function zSpreadOf(
  device: GPUDevice,
  n: number,
  part: [number, number, number, number],
  means: [number, number],
): Promise<Float32Array> {
  const usage = GPUBufferUsage;
  const words = new Uint32Array(4);
  new Float32Array(words.buffer, 0, 2).set(part.slice(0, 2));
  words[2] = part[2];
  words[3] = part[3];
  const partBuf = device.createBuffer({ label: "test-part", size: 16, usage: usage.STORAGE | usage.COPY_DST });
  device.queue.writeBuffer(partBuf, 0, words);
  const scalars = device.createBuffer({
    label: "test-scalars",
    size: Z_SCALARS_BYTES,
    usage: usage.STORAGE | usage.COPY_DST | usage.COPY_SRC,
  });
  device.queue.writeBuffer(scalars, 0, new Float32Array(means));
  const enc = device.createCommandEncoder({ label: "test-z-spread" });
  // As the engine dispatches it.
  const uni = dispatchKernel(device, enc, zSpread, [partBuf, scalars], { count: 1, n, ...zSpreadModel(n) });
  const out = new Float32Array(await submitAndRead(device, enc, scalars, Z_SCALARS_BYTES));
  for (const b of [partBuf, scalars, uni]) b.destroy();
  return out;
}

Deno.test({
  name: "z_spread.wgsl forms the error model's k and rel as the host's zSafeThreshold does",
  ignore: !engine,
  async fn() {
    const n = 4096 * 1024;
    // Means near and far from zero, a zero std on one axis, and near counts below and above the cap; and a zero-mean
    // layer of another size (the floor's 1 / sqrt(n)).
    const capNear = Math.floor((ALPHA_CAP * n) / ALPHA_REL);
    const other = 16 * 65536;
    const cases: [string, number, [number, number, number, number], [number, number]][] = [
      ["zero-mean", n, [0.9 * n, 1.1 * n, n / 10, 0], [1e-4, -2e-4]],
      ["mean far from zero", n, [0.01 * n, 0.02 * n, n / 3, 0], [0.3, 0.25]],
      ["zero row-std", n, [0, 0.5 * n, 0, 0], [0.1, 0.001]],
      ["near under the cap", n, [0.5 * n, 0.5 * n, n / 5, capNear], [0.01, 0.01]],
      ["near over the cap", n, [0.5 * n, 0.5 * n, n / 5, capNear + 1], [0.01, 0.01]],
      ["another size", other, [0.9 * n, 1.1 * n, n / 10, 0], [1e-4, -2e-4]],
    ];
    for (const [what, size, part, means] of cases) {
      const z = await zSpreadOf(engine!.device, size, part, means);
      const want = zErrorModel(z, size); // the host's model, from the scalars the GPU formed
      const k = z[Z_SCALARS.k]!, rel = z[Z_SCALARS.rel]!;
      assert.ok(Math.abs(k - want.k) <= 1e-5 * want.k, `${what}: k ${k} against ${want.k}`);
      assert.ok(Math.abs(rel - want.rel) <= 1e-6 * want.rel, `${what}: rel ${rel} against ${want.rel}`);
      assert.equal(new Uint32Array(z.buffer)[Z_SCALARS.near], part[3], `${what}: near`);
      if (what === "near over the cap") assert.ok(Math.abs(rel - Z_REL) <= 1e-6 * Z_REL, "over the cap: Z_REL alone");
      if (what === "near under the cap") assert.ok(rel > Z_REL * 1.2, "under the cap: the near weights' share");
    }
  },
});
