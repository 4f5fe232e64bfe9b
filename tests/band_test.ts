import assert from "node:assert/strict";
import { bandDifferences, maskBit } from "./_band.ts";

/** A packed mask (LSB first) with the given entries set. */
function mask(n: number, set: number[]): Uint8Array {
  const m = new Uint8Array(Math.ceil(n / 8));
  for (const i of set) m[i >>> 3]! |= 1 << (i & 7);
  return m;
}

Deno.test("maskBit() reads packed masks LSB first", () => {
  const m = mask(16, [0, 9, 15]);
  assert.deepEqual([...Array(16).keys()].filter((i) => maskBit(m, i)), [0, 9, 15]);
});

Deno.test("bandDifferences() allows swaps within relative 1e-5 of each unit's threshold, and no others", () => {
  // Two units of 4; the reference prunes the two lowest of each. Unit 0's threshold is 1.0, unit 1's is 2.0.
  const score = [0.5, 1.0, 1.000005, 3, 2.0, 1.5, 2.00003, 9];
  const ref = mask(8, [0, 1, 4, 5]);
  // Unit 0: entries 1 and 2 swapped (2 is 5e-6 above 1.0: within the band). Unit 1: 4 and 6 swapped (6 is 1.5e-5
  // above 2.0: outside).
  const got = mask(8, [0, 2, 5, 6]);
  const d = bandDifferences(got, ref, score, 4);
  assert.equal(d.differing, 4);
  assert.equal(d.outside, 1);
  assert.equal(d.firstOutside, 6);
  assert.ok(Math.abs(d.worst - 1.5e-5) < 1e-12, `${d.worst}`);
  // The same swaps judged layer-wide: the threshold is 2.0, so 1.0 and 1.000005 are far from it.
  assert.equal(bandDifferences(got, ref, score, 8).outside, 3);
  // Equal masks: nothing differs, whatever the scores.
  assert.deepEqual(bandDifferences(ref, ref, score, 4), { differing: 0, outside: 0, firstOutside: -1, worst: 0 });
});

Deno.test("bandDifferences(): a zero threshold's band holds only zero; a unit with nothing pruned has none", () => {
  const score = [0, 0, 1e-30, 5];
  // Reference prunes entry 0 (threshold 0). Swapping 0 and 1 (both 0) is allowed; pruning 2 (1e-30) is not.
  assert.equal(bandDifferences(mask(4, [1]), mask(4, [0]), score, 4).outside, 0);
  assert.equal(bandDifferences(mask(4, [2]), mask(4, [0]), score, 4).outside, 1);
  const none = bandDifferences(mask(4, [3]), mask(4, []), score, 4);
  assert.equal(none.outside, 1);
  assert.equal(none.worst, Infinity);
  assert.equal(bandDifferences(mask(4, [2]), mask(4, [0]), score, 4).worst, Infinity);
  // A unit of 0 entries would never advance.
  assert.throws(() => bandDifferences(mask(4, []), mask(4, []), score, 0), RangeError);
});
