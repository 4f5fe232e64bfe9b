/** A CPU backend worker: runs `CpuOp`s posted by the pool (`prune/cpu_pool.ts`) on shared typed arrays. */
/// <reference lib="deno.worker" />
import { type CpuOp, runOp } from "./cpu_ops.ts";

self.onmessage = (e: MessageEvent<{ id: number; task: CpuOp }>) => {
  const { id, task } = e.data;
  try {
    self.postMessage({ id, result: runOp(task) });
  } catch (err) {
    // The name travels too: a RangeError (an allocation that failed) is answered differently from a bug.
    self.postMessage({ id, error: err instanceof Error ? err.message : String(err), name: (err as Error)?.name });
  }
};
