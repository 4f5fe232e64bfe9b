/**
 * Shared by the WebGPU engine's and backend's tests: a backend opened and closed around a test, the `unavailable`
 * check, a bounded wait for a condition, and device errors injected through a device's error scopes.
 */
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

/**
 * How long "at once" may take: room for lavapipe worker starts on a loaded 2-core host (3 to 7.3 s seen under CI
 * load). A bound against a hang, never a speed check; a test that tells "at once" from "after the watchdog" sets a
 * longer watchdog (ten minutes).
 */
export const AT_ONCE_MS = 60_000;

/** Polls `ok` every 20 ms until it holds or `ms` pass; whether it held. */
export async function eventually(ok: () => boolean | Promise<boolean>, ms = AT_ONCE_MS): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/**
 * Wraps `device`'s error scopes so that `inject(filter)` may replace what a popped scope caught (null: keep it): a
 * driver's failure or an out-of-memory error cannot be provoked on purpose. Returns the scopes still open (to check
 * none is left) and a restore function.
 */
export function injectScopes(
  device: GPUDevice,
  inject: (filter: GPUErrorFilter) => GPUError | null,
): { open: GPUErrorFilter[]; restore: () => void } {
  const d = device as unknown as {
    pushErrorScope(f: GPUErrorFilter): void;
    popErrorScope(): Promise<GPUError | null>;
  };
  const push = d.pushErrorScope.bind(d), pop = d.popErrorScope.bind(d);
  const open: GPUErrorFilter[] = [];
  d.pushErrorScope = (f) => (open.push(f), push(f));
  d.popErrorScope = async () => {
    const f = open.pop()!, caught = await pop();
    return inject(f) ?? caught;
  };
  return {
    open,
    restore: () => {
      delete (d as Partial<typeof d>).pushErrorScope;
      delete (d as Partial<typeof d>).popErrorScope;
    },
  };
}
