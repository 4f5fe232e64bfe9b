import assert from "node:assert/strict";
import { createPoolExecutor } from "./cpu_backend.ts";

Deno.test("createPoolExecutor starts no more workers than a layer's passes can hand work to (64)", () => {
  // Workers stand in for real ones, counted: a real pool of 72 would take over 1 GiB to show the same.
  let started = 0;
  const real = globalThis.Worker;
  globalThis.Worker = class {
    onmessage: unknown = null;
    onerror: unknown = null;
    constructor() {
      started++;
    }
    postMessage(): void {}
    terminate(): void {}
  } as unknown as typeof Worker;
  try {
    // No pass of a layer posts more than 64 ops (2 per thread, at most 64 parts), and op i goes to worker i: on a
    // host of 72 cores, 8 workers would hold their memory without ever computing.
    const exec = createPoolExecutor(72);
    assert.equal(started, 64);
    assert.equal(exec.threads, 64);
    exec.close();
    const few = createPoolExecutor(3);
    assert.equal(started, 64 + 3, "fewer threads than that: one worker each");
    few.close();
  } finally {
    globalThis.Worker = real;
  }
});
