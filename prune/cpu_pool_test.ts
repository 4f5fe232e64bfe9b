import assert from "node:assert/strict";
import { CpuPool } from "./cpu_pool.ts";
import { ZpruneError } from "../contract/errors.ts";

Deno.test("CpuPool: an op's thrown error comes back with its kind, and the worker keeps serving", async () => {
  const pool = new CpuPool(1);
  try {
    // Per-row selection allocates a row of scratch first: 2^33 columns cannot be had, a real allocation failure.
    const huge = { op: "rows", keys: new Uint32Array(0), cols: 2 ** 33, k: 1, mask: new Uint8Array(0), r0: 0, r1: 0 };
    await assert.rejects(pool.run(0, huge as never), (e: unknown) => {
      assert.ok(e instanceof RangeError, String(e));
      assert.match(e.message, /allocation failed/);
      return true;
    });
    // The same worker then answers a sound op: two rows of four keys, the lowest two of each pruned.
    const keys = new Uint32Array([4, 3, 2, 1, 1, 2, 3, 4]);
    const mask = new Uint8Array(new SharedArrayBuffer(1));
    await pool.run(0, { op: "rows", keys, cols: 4, k: 2, mask, r0: 0, r1: 2 });
    assert.equal(mask[0], 0b0011_1100);
    assert.equal(pool.restarts, 0);
  } finally {
    pool.close();
  }
});

Deno.test("CpuPool.all: of a refused allocation and a worker's death in one pass, the death is thrown", async () => {
  const pool = new CpuPool(2);
  try {
    // Op 0 fails on worker 0 (a row of scratch for 2^33 columns), op 1 on worker 1, which dies under it. Thrown first
    // in order, the RangeError would have its caller reuse buffers that the dead worker may still be writing into.
    const huge = { op: "rows", keys: new Uint32Array(0), cols: 2 ** 33, k: 1, mask: new Uint8Array(0), r0: 0, r1: 0 };
    const small = { op: "rows", keys: new Uint32Array(4), cols: 4, k: 1, mask: new Uint8Array(1), r0: 0, r1: 1 };
    pool.crash(1);
    await assert.rejects(
      pool.all(2, (i) => (i === 0 ? huge : small) as never),
      (e: unknown) => e instanceof ZpruneError && e.code === "unavailable",
    );
    assert.equal(pool.restarts, 1);
  } finally {
    pool.close();
  }
});

Deno.test("CpuPool: a task that cannot be posted fails alone; close() fails pending ones as a shutdown", async () => {
  const pool = new CpuPool(1);
  // A function cannot be cloned into a worker: postMessage throws, and the task must settle with that error.
  const unclonable = { op: "rows", keys: () => {}, cols: 4, k: 1, mask: new Uint8Array(1), r0: 0, r1: 1 };
  await assert.rejects(pool.run(0, unclonable as never), (e: unknown) => e instanceof DOMException);
  // close() in the same turn as the post: the worker's answer cannot have been read yet, so the task is pending.
  const small = { op: "rows", keys: new Uint32Array(4), cols: 4, k: 1, mask: new Uint8Array(1), r0: 0, r1: 1 };
  const pending = pool.run(0, small as never);
  pool.close();
  await assert.rejects(pending, (e: unknown) => {
    assert.ok(e instanceof ZpruneError && e.code === "unavailable", String(e));
    assert.equal(e.message, "the CPU backend is shutting down");
    return true;
  });
  assert.equal(pool.restarts, 0, "a closed pool starts no worker");
});
