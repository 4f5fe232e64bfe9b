/**
 * ZPRUNE_BACKEND's three choices against what this machine has: a real GPU, a fallback adapter (lavapipe in CI), or
 * no adapter at all (a child process whose Deno is told to use a graphics API its platform has not).
 */
import assert from "node:assert/strict";
import { chooseBackend } from "./choose_backend.ts";

/** The adapter a backend would see: "gpu", "fallback", or "none". */
async function adapterKind(): Promise<"gpu" | "fallback" | "none"> {
  const adapter = typeof navigator !== "undefined" ? await navigator.gpu?.requestAdapter() : null;
  if (!adapter) return "none";
  // Older implementations put the flag on the adapter, newer ones on its info (gpu/engine.ts reads both).
  const fallback = (adapter.info as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
    (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return fallback ? "fallback" : "gpu";
}

/** The kind of backend `choice` gives here, or the message it fails with; the backend is closed. */
async function chosen(choice: "cpu" | "auto" | "webgpu"): Promise<string> {
  try {
    const backend = await chooseBackend(choice);
    await backend.close();
    return backend.kind;
  } catch (e) {
    return (e as Error).message;
  }
}

Deno.test("chooseBackend(): cpu is the CPU; auto takes only a real GPU; webgpu takes any adapter", async () => {
  const here = await adapterKind();
  assert.equal(await chosen("cpu"), "cpu");
  assert.equal(await chosen("auto"), here === "gpu" ? "webgpu" : "cpu", `adapter: ${here}`);
  if (here === "none") assert.match(await chosen("webgpu"), /ZPRUNE_BACKEND=webgpu, but .* no WebGPU adapter/);
  else assert.equal(await chosen("webgpu"), "webgpu", `adapter: ${here}`);
});

Deno.test("chooseBackend(): with no adapter, webgpu fails naming the setting; cpu and auto use the CPU", async () => {
  const code = `
    import { chooseBackend } from ${JSON.stringify(new URL("./choose_backend.ts", import.meta.url).href)};
    const out = {};
    for (const choice of ["cpu", "auto", "webgpu"]) {
      try {
        const b = await chooseBackend(choice);
        out[choice] = b.kind;
        await b.close();
      } catch (e) {
        out[choice] = e.message;
      }
    }
    console.log(JSON.stringify(out));`;
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", code],
    // Direct3D 12 exists only on Windows, Metal only on Apple's systems: asked for, wgpu finds no adapter.
    env: { DENO_WEBGPU_BACKEND: Deno.build.os === "windows" ? "metal" : "dx12" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
  const out = JSON.parse(new TextDecoder().decode(res.stdout).trim().split("\n").at(-1)!);
  assert.deepEqual(out, {
    cpu: "cpu",
    auto: "cpu",
    webgpu: "ZPRUNE_BACKEND=webgpu, but this runtime finds no WebGPU adapter",
  });
});

/**
 * A child's script: chooseBackend() with WebGPU present (a stand-in navigator.gpu, whatever this machine has) but
 * every GPU worker failing to start (a stand-in Worker that throws, as a device that fails to open would fail it).
 * It prints each choice's backend kind or error, and how many workers each tried to start.
 */
const FAILING_GPU_CHILD = `
import { chooseBackend } from ${JSON.stringify(new URL("./choose_backend.ts", import.meta.url).href)};
let workers = 0;
Object.defineProperty(navigator, "gpu", { value: { requestAdapter: () => Promise.resolve(null) }, configurable: true });
globalThis.Worker = class {
  constructor() {
    workers++;
    throw new Error("the GPU worker failed to start");
  }
};
const out = {};
for (const choice of ["cpu", "auto", "webgpu"]) {
  const before = workers;
  try {
    const b = await chooseBackend(choice);
    out[choice] = b.kind;
    await b.close();
  } catch (e) {
    out[choice] = e.message;
  }
  out[choice + " workers"] = workers - before;
}
console.log(JSON.stringify(out));
`;

/** Runs FAILING_GPU_CHILD under Deno (`deno eval`, in this project's configuration) or Bun: its output and stderr. */
async function failingGpu(runtime: "deno" | "bun"): Promise<{ out: unknown; stderr: string }> {
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, FAILING_GPU_CHILD);
    const bun = new URL("../node_modules/.bin/bun", import.meta.url).pathname;
    const [cmd, args] = runtime === "deno"
      ? [Deno.execPath(), ["eval", "--no-check", FAILING_GPU_CHILD]]
      : [bun, ["--no-env-file", file]];
    const res = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(res.code, 0, stderr);
    return { out: JSON.parse(new TextDecoder().decode(res.stdout).trim().split("\n").at(-1)!), stderr };
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("chooseBackend(): a GPU worker failing: webgpu fails with its error, auto uses the CPU", async () => {
  const { out, stderr } = await failingGpu("deno");
  assert.deepEqual(out, {
    "cpu": "cpu",
    "cpu workers": 0, // the CPU backend, without so much as trying WebGPU
    "auto": "cpu",
    "auto workers": 1,
    "webgpu": "the GPU worker failed to start", // the cause itself, not "no adapter"
    "webgpu workers": 1,
  });
  assert.match(stderr, /^zprune: WebGPU failed to start \(the GPU worker failed to start\); using the CPU backend$/m);
});

Deno.test("chooseBackend(): under Bun a navigator.gpu is not Deno's WebGPU: auto is the CPU", async () => {
  const { out } = await failingGpu("bun");
  assert.deepEqual(out, {
    "cpu": "cpu",
    "cpu workers": 0,
    "auto": "cpu",
    "auto workers": 0, // the GPU backend runs in a Deno Worker: never started under Bun
    "webgpu": "ZPRUNE_BACKEND=webgpu, but this runtime finds no WebGPU adapter",
    "webgpu workers": 0,
  });
});
