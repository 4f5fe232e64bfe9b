import assert from "node:assert/strict";
import { flattenWorkgroups, MAX_WORKGROUPS_PER_DIM, packUniforms } from "./kernel.ts";
import { score } from "./kernels/score.ts";
import { decode } from "./kernels/decode.ts";

Deno.test("packUniforms() lays fields out in order, 4 bytes each, padded to 16", () => {
  const buf = packUniforms(decode, { count: 7, dtype: 2, base: 0xffffffff });
  assert.equal(buf.byteLength, 16);
  assert.deepEqual([...new Uint32Array(buf)], [7, 2, 0xffffffff, 0]);
  const s = packUniforms(score, {
    count: 1,
    cols: 2,
    row0: 3,
    method: 3,
    mean_r: 0.5,
    inv_std_r: 2,
    mean_c: -0.25,
    inv_std_c: 4,
    alpha: 0.7,
  });
  assert.equal(s.byteLength, 48);
  assert.deepEqual([...new Float32Array(s, 16, 5)], [0.5, 2, -0.25, 4, Math.fround(0.7)]);
});

Deno.test("packUniforms() rejects a value that is not a u32", () => {
  assert.throws(() => packUniforms(decode, { count: -1, dtype: 0, base: 0 }), RangeError);
  assert.throws(() => packUniforms(decode, { count: 2 ** 32, dtype: 0, base: 0 }), RangeError);
  assert.throws(() => packUniforms(decode, { count: 1.5, dtype: 0, base: 0 }), RangeError);
});

Deno.test("flattenWorkgroups() keeps each dimension within the limit and covers the count", () => {
  assert.deepEqual(flattenWorkgroups(10), [10, 1]);
  assert.deepEqual(flattenWorkgroups([3, 4]), [3, 4]);
  for (const n of [MAX_WORKGROUPS_PER_DIM, MAX_WORKGROUPS_PER_DIM + 1, 918_000, 14_680_064]) {
    const [x, y] = flattenWorkgroups(n);
    assert.ok(x <= MAX_WORKGROUPS_PER_DIM && y <= MAX_WORKGROUPS_PER_DIM);
    assert.ok(x * y >= n, `${x} * ${y} < ${n}`);
  }
});
