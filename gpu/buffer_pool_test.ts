import assert from "node:assert/strict";
import { BufferPool, poolSize } from "./buffer_pool.ts";
import { preferVulkan } from "./driver_lifetime.ts";
import { ManualTimers } from "../tests/_manual_timers.ts";

preferVulkan();
const adapter = await navigator.gpu?.requestAdapter();
const device = adapter ? await adapter.requestDevice() : null;
// Release the device before the runtime tears the module down, rather than leave it to the exit path.
globalThis.addEventListener("unload", () => device?.destroy());
const USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;

Deno.test("poolSize() rounds up to 256 bytes", () => {
  assert.equal(poolSize(1), 256);
  assert.equal(poolSize(256), 256);
  assert.equal(poolSize(257), 512);
});

Deno.test({
  name: "BufferPool reuses a released buffer of the same label, size and usage only",
  ignore: !device,
  fn() {
    const pool = new BufferPool(device!, 1 << 20);
    const a = pool.acquire(1000, USAGE, "a");
    pool.release(a);
    const b = pool.acquire(1024, USAGE, "a");
    assert.equal(b, a);
    assert.equal(b.label, "a");
    const c = pool.acquire(1000, USAGE | GPUBufferUsage.COPY_SRC, "a");
    assert.notEqual(c, a, "another usage is another key");
    pool.release(b);
    const d = pool.acquire(1000, USAGE, "d");
    assert.notEqual(d, a, "another label is another key");
    assert.equal(pool.liveBuffers, 3);
    pool.release(c, d);
    pool.clear();
    assert.equal(pool.liveBuffers, 0);
  },
});

Deno.test({
  name: "BufferPool destroys the oldest idle buffers beyond its byte cap",
  ignore: !device,
  fn() {
    const pool = new BufferPool(device!, 4096);
    const bufs = [0, 1, 2].map(() => pool.acquire(2048, USAGE, "b"));
    pool.release(...bufs);
    assert.equal(pool.idleBytes, 4096);
    assert.equal(pool.liveBuffers, 2);
    // The first released was evicted; the two newest are reused.
    const again = [pool.acquire(2048, USAGE, "b"), pool.acquire(2048, USAGE, "b")];
    assert.ok(again.includes(bufs[1]!) && again.includes(bufs[2]!));
    pool.release(...again);
    pool.clear();
  },
});

Deno.test({
  name: "BufferPool destroys its idle buffers once none has been in use for idleMs",
  ignore: !device,
  fn() {
    const clock = new ManualTimers();
    const pool = new BufferPool(device!, 1 << 20, 100, clock);
    const a = pool.acquire(1000, USAGE, "idle");
    const b = pool.acquire(1000, USAGE, "idle");
    pool.release(a);
    clock.advance(400);
    // b stayed in use, as in a job longer than idleMs: the pool is not idle, and a is kept.
    assert.equal(pool.idleBytes, a.size);
    pool.release(b);
    clock.advance(99);
    assert.equal(pool.idleBytes, a.size + b.size);
    clock.advance(1);
    assert.equal(pool.idleBytes, 0);
    assert.equal(pool.liveBuffers, 0);
    const c = pool.acquire(1000, USAGE, "idle");
    assert.ok(c !== a && c !== b, "a destroyed buffer is not handed out again");
    pool.release(c);
    pool.clear();
  },
});

/** Whether `buffer` can still be written: WebGPU refuses a write to a destroyed buffer with a validation error. */
async function usable(buffer: GPUBuffer): Promise<boolean> {
  device!.pushErrorScope("validation");
  device!.queue.writeBuffer(buffer, 0, new Uint8Array(4));
  return await device!.popErrorScope() === null;
}

Deno.test("poolSize() gives an empty array a buffer too: WebGPU cannot bind zero bytes", () => {
  assert.equal(poolSize(0), 256);
});

Deno.test({
  name: "BufferPool hands an idle buffer out only for its own usage",
  ignore: !device,
  fn() {
    const pool = new BufferPool(device!, 1 << 20);
    const a = pool.acquire(1000, USAGE, "u");
    pool.release(a);
    // Same label and size, other usage: a buffer without COPY_SRC cannot serve as a copy source.
    const b = pool.acquire(1000, USAGE | GPUBufferUsage.COPY_SRC, "u");
    assert.notEqual(b, a);
    assert.equal(b.usage, USAGE | GPUBufferUsage.COPY_SRC);
    assert.equal(pool.acquire(1000, USAGE, "u"), a);
    pool.release(a, b);
    pool.clear();
  },
});

Deno.test({
  name: "BufferPool counts a reused buffer out of its idle bytes, and back in when released",
  ignore: !device,
  fn() {
    const pool = new BufferPool(device!, 1 << 20);
    const a = pool.acquire(1000, USAGE, "i");
    pool.release(a);
    assert.equal(pool.idleBytes, 1024);
    assert.equal(pool.acquire(1000, USAGE, "i"), a);
    assert.equal(pool.idleBytes, 0, "a buffer in use is not idle");
    pool.release(a);
    assert.equal(pool.idleBytes, 1024);
    pool.clear();
  },
});

Deno.test({
  name: "BufferPool destroys what it evicts or discards, and never hands it out again",
  ignore: !device,
  async fn() {
    const pool = new BufferPool(device!, 4096);
    const bufs = [0, 1, 2].map(() => pool.acquire(2048, USAGE, "e"));
    pool.release(...bufs); // 6144 bytes idle, over the 4096 cap: the oldest, bufs[0], goes
    assert.equal(await usable(bufs[0]!), false, "an evicted buffer is destroyed");
    const again = [0, 1, 2].map(() => pool.acquire(2048, USAGE, "e"));
    assert.ok(!again.includes(bufs[0]!), "the evicted buffer was handed out again");
    for (const b of again) assert.equal(await usable(b), true);
    assert.equal(pool.liveBuffers, 3);
    // A job that failed discards its buffers: destroyed, and no longer counted as live.
    pool.discard(again[0]!, again[1]!);
    assert.equal(await usable(again[0]!), false);
    assert.equal(await usable(again[1]!), false);
    assert.equal(pool.liveBuffers, 1);
    pool.release(again[2]!);
    pool.clear();
    assert.equal(pool.liveBuffers, 0);
  },
});

Deno.test({
  name: "BufferPool keeps idle buffers for idleMs after the last release, not after the last acquire",
  ignore: !device,
  fn() {
    const clock = new ManualTimers();
    const pool = new BufferPool(device!, 1 << 20, 100, clock);
    const a = pool.acquire(1000, USAGE, "late");
    clock.advance(50);
    pool.release(a); // the job ended at 50: idle from then on
    clock.advance(99);
    assert.equal(pool.idleBytes, a.size, "cleared before idleMs had passed since the release");
    clock.advance(1);
    assert.equal(pool.idleBytes, 0);
    assert.equal(pool.liveBuffers, 0);
  },
});
