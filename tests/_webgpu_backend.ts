/** Shared by the WebGPU backend's tests: a backend opened and closed around a test, and the `unavailable` check. */
import { ZpruneError } from "../contract/errors.ts";
import { createWebGpuBackend, type WebGpuBackend, type WebGpuBackendOptions } from "../gpu/webgpu_backend.ts";

/** Runs `fn` with a fresh backend (software adapters allowed) and closes it however `fn` ends. */
export async function withBackend(
  opts: Partial<WebGpuBackendOptions>,
  fn: (b: WebGpuBackend) => Promise<void>,
): Promise<void> {
  const b = (await createWebGpuBackend({ allowFallback: true, ...opts }))!;
  try {
    await fn(b);
  } finally {
    await b.close();
  }
}

/** Whether `e` is the contract's 503 `unavailable`. */
export const isUnavailable = (e: unknown): boolean => e instanceof ZpruneError && e.code === "unavailable";
