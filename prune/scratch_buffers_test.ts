import assert from "node:assert/strict";
import { ScratchBuffers } from "./scratch_buffers.ts";
import { ManualTimers } from "../tests/_manual_timers.ts";

Deno.test("ScratchBuffers: a layer of the same size gets the same buffer back; other sizes get fresh ones", () => {
  const s = new ScratchBuffers(1 << 20, 60_000);
  const a = s.take(4096);
  s.give(a);
  assert.equal(s.keptBytes, 4096);
  assert.notEqual(s.take(8192), a);
  assert.equal(s.take(4096), a);
  assert.equal(s.keptBytes, 0);
  s.give(new ArrayBuffer(64)); // not shared: never kept
  assert.equal(s.keptBytes, 0);
  s.clear();
});

Deno.test("ScratchBuffers: a smaller layer reuses a kept buffer up to twice its size, no larger", () => {
  const s = new ScratchBuffers(1 << 20, 60_000);
  const big = s.take(8192), mid = s.take(6000);
  s.give(big);
  s.give(mid);
  assert.equal(s.take(5000), mid, "the smallest that holds it");
  assert.equal(s.take(4096), big, "twice the size at most");
  s.give(big);
  assert.notEqual(s.take(4095), big, "past twice: a fresh one, the big one kept for a big layer");
  assert.equal(s.keptBytes, 8192);
  assert.equal(s.take(8192), big);
  assert.equal(s.keptBytes, 0);
  s.clear();
});

Deno.test("ScratchBuffers: changing shapes stay within maxBytes, the least recently given going first", () => {
  // The soak audit's case: every request a new layer shape. Before, the first sizes filled the budget and stayed
  // for good, and no later size was kept.
  const max = 10_000;
  const s = new ScratchBuffers(max, 60_000);
  const given: number[] = [];
  for (let k = 0; k < 50; k++) {
    const bytes = 1000 + 37 * k;
    s.give(s.take(bytes));
    given.push(bytes);
    assert.ok(s.keptBytes <= max, `${s.keptBytes} kept after ${k + 1} sizes`);
    // What is kept is the longest run of the latest sizes that fits.
    let fit = 0, sum = 0;
    for (; fit < given.length && sum + given[given.length - 1 - fit]! <= max; fit++) {
      sum += given[given.length - 1 - fit]!;
    }
    assert.deepEqual(s.keptSizes, given.slice(given.length - fit));
  }
  s.give(new SharedArrayBuffer(max + 1)); // larger than the whole budget: dropped, nothing evicted for it
  assert.equal(s.keptSizes.at(-1), given.at(-1));
  s.clear();
});

Deno.test("ScratchBuffers: an idle cache gives its buffers up after idleMs, not while a layer computes", async () => {
  const clock = new ManualTimers();
  const s = new ScratchBuffers(1 << 20, 600, clock);
  s.give(s.take(4096));
  s.give(s.take(8192));
  assert.equal(s.keptBytes, 4096 + 8192);
  // A layer longer than idleMs: the kept buffers stay, though nothing was taken or given meanwhile.
  let finish!: () => void;
  const layer = s.during(() => new Promise<void>((r) => (finish = r)));
  clock.advance(1500);
  assert.equal(s.keptBytes, 4096 + 8192);
  finish();
  await layer;
  clock.advance(100);
  s.give(s.take(4096)); // use restarts the countdown
  clock.advance(599);
  assert.equal(s.keptBytes, 4096 + 8192);
  clock.advance(1);
  assert.equal(s.keptBytes, 0);
  assert.deepEqual(s.keptSizes, []);
});
