import assert from "node:assert/strict";
import { gatherWindows, randomStarts, readI64, readU16 } from "./windows.ts";

const root = (p: string) => new URL(`../${p}`, import.meta.url).pathname;

Deno.test("gatherWindows() takes the reference's calibration windows; randomStarts() is seeded", async () => {
  const ids = await readU16(root("data/corpus/calib_ids.u16"));
  const starts = await readI64(root("data/corpus/calib_starts_seed0.i64"));
  assert.equal(starts.length, 64);
  assert.equal(starts[0], 93824); // first int64 of the file
  const w = gatherWindows(ids, starts, 256);
  assert.equal(w.length, 64 * 256);
  assert.deepEqual(Array.from(w.subarray(256, 512)), Array.from(ids.subarray(starts[1]!, starts[1]! + 256)));
  assert.deepEqual(randomStarts(1000, 5, 256, 7), randomStarts(1000, 5, 256, 7));
  assert.notDeepEqual(randomStarts(1000, 5, 256, 7), randomStarts(1000, 5, 256, 8));
  assert.ok(randomStarts(300, 100, 256, 1).every((s) => s >= 0 && s <= 44));
  // Uniform over [0, length - seqLen], both ends included: the last window ending at the last token is drawn too.
  const drawn = new Set(randomStarts(300, 2000, 256, 3));
  assert.deepEqual([...drawn].sort((a, b) => a - b), Array.from({ length: 45 }, (_, i) => i));
  assert.deepEqual(randomStarts(256, 3, 256, 5), [0, 0, 0], "one window fits: it starts at 0");
});
