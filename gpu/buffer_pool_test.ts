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
