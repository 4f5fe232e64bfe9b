/**
 * ZPRUNE_BACKEND: `cpu` forces the CPU backend; `webgpu` forces WebGPU on any adapter (a software fallback
 * included) and fails without one; `auto` takes WebGPU on a real GPU and the CPU backend otherwise (a fallback
 * adapter such as lavapipe is slower than the CPU backend).
 */
import type { BackendChoice } from "../config.ts";
import type { Backend } from "../prune/backend.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { runtimeName } from "./host.ts";

/** Creates the backend `choice` asks for. */
export async function chooseBackend(choice: BackendChoice): Promise<Backend> {
  if (choice === "cpu") return createCpuBackend();
  // Deno's WebGPU only: the GPU backend runs its work in a Deno Worker.
  const hasWebGpu = typeof navigator !== "undefined" && "gpu" in navigator && runtimeName === "deno";
  if (hasWebGpu) {
    // Loaded only here, so runtimes without WebGPU (Bun) never parse the GPU code.
    const { createWebGpuBackend } = await import("../gpu/webgpu_backend.ts");
    try {
      const gpu = await createWebGpuBackend({ allowFallback: choice === "webgpu" });
      if (gpu) return gpu;
    } catch (err) {
      // An adapter that fails to give a working device: `auto` serves on the CPU rather than not at all.
      if (choice === "webgpu") throw err;
      console.error(
        `zprune: WebGPU failed to start (${err instanceof Error ? err.message : err}); using the CPU backend`,
      );
    }
  }
  if (choice === "webgpu") throw new Error("ZPRUNE_BACKEND=webgpu, but this runtime finds no WebGPU adapter");
  return createCpuBackend();
}
