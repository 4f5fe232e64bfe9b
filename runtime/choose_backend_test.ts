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
