/**
 * The two measures that keep the GPU driver's libraries out of the exit path, checked where they act: in fresh
 * processes (gpu/testdata/driver_probe.ts), reading /proc/self/maps. The crash they prevent is a race at exit and
 * cannot be asserted deterministically; what makes it impossible can be.
 */
import assert from "node:assert/strict";
import { preferVulkan } from "./driver_lifetime.ts";

const ROOT = new URL("../", import.meta.url);
const PROBE = new URL("./testdata/driver_probe.ts", import.meta.url).pathname;

preferVulkan();
const linux = Deno.build.os === "linux";
const adapter = linux ? await navigator.gpu?.requestAdapter() : null;

/** Runs the probe in a fresh process without `DENO_WEBGPU_BACKEND` unless `chosen` is given; returns its JSON. */
async function probe(args: string[], chosen?: string): Promise<Record<string, unknown>> {
  const env = Deno.env.toObject();
  delete env.DENO_WEBGPU_BACKEND;
  if (chosen !== undefined) env.DENO_WEBGPU_BACKEND = chosen;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", PROBE, ...args],
    cwd: ROOT.pathname,
    clearEnv: true,
    env,
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `probe ${args.join(" ")} exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(text.trim().split("\n").at(-1)!);
}

Deno.test({
  name: "preferVulkan(): on Linux WebGPU opens Vulkan only, so no EGL or Mesa GL driver is loaded",
  ignore: !adapter,
  async fn() {
    const seen = await probe(["prefer", "open"]);
    assert.equal(seen.chosen, "vulkan");
    assert.equal(seen.adapter, true, "the Vulkan adapter is still found");
    assert.deepEqual(seen.gl, [], "EGL or a GL driver was loaded");
  },
});

Deno.test({
  name: "preferVulkan() keeps an explicit DENO_WEBGPU_BACKEND",
  ignore: !linux,
  async fn() {
    const seen = await probe(["prefer"], "vulkan,gl");
    assert.equal(seen.chosen, "vulkan,gl");
  },
});

Deno.test({
  name: "closing the WebGPU backend unloads no library: the driver stays mapped after its worker's thread ended",
  ignore: !adapter,
  async fn() {
    const seen = await probe(["close"]);
    assert.equal(seen.deviceReleased, true);
    assert.deepEqual(seen.glOpen, [], "createWebGpuBackend() opened WebGPU before choosing Vulkan");
    // Worker threads are found by Deno's names for them ("worker-N"); if those change, say so rather than pass.
    assert.ok((seen.workerThreadsOpen as number) > 0, "no worker thread was seen while the backend was open");
    assert.equal(seen.workerThreadsLeft, 0, "the worker's thread had not ended, so nothing was compared");
    assert.deepEqual(seen.unloaded, []);
  },
});
