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

/** A fresh instance of driver_lifetime.ts, with its own pinned promise. */
function freshModule(tag: string): Promise<typeof import("./driver_lifetime.ts")> {
  return import(new URL(`./driver_lifetime.ts?${tag}`, import.meta.url).href);
}

/** Runs `fn` while `navigator.gpu` reads as `gpu`, then restores Navigator.prototype's getter. */
async function withGpu<T>(gpu: unknown, fn: () => Promise<T>): Promise<T> {
  Object.defineProperty(navigator, "gpu", { value: gpu, configurable: true });
  try {
    return await fn();
  } finally {
    delete (navigator as { gpu?: unknown }).gpu;
  }
}

Deno.test("pinDriver() opens WebGPU once: every call answers the first call's promise", async () => {
  const { pinDriver } = await freshModule("once");
  let requests = 0;
  await withGpu({ requestAdapter: () => Promise.resolve({ adapter: ++requests }) }, async () => {
    const first = pinDriver();
    assert.equal(pinDriver(), first);
    assert.deepEqual(await first, { adapter: 1 });
    assert.equal(requests, 1);
  });
});

Deno.test("pinDriver() resolves null when the adapter request fails or WebGPU is absent", async () => {
  const failing = { requestAdapter: () => Promise.reject(new Error("no driver")) };
  for (const [tag, gpu] of [["fails", failing], ["absent", undefined]] as const) {
    const { pinDriver } = await freshModule(tag);
    // A rejection would surface in webgpu_backend's `await pinDriver()` and keep the backend from starting.
    await withGpu(gpu, async () => assert.equal(await pinDriver(), null, tag));
  }
});
