import assert from "node:assert/strict";
import { defineKernel, flattenWorkgroups, MAX_WORKGROUPS_PER_DIM, packUniforms } from "./kernel.ts";
import { score } from "./kernels/score.ts";
import { decode } from "./kernels/decode.ts";

Deno.test("packUniforms() lays fields out in order, 4 bytes each, padded to 16", () => {
  const buf = packUniforms(decode, { count: 7, dtype: 2, base: 0xffffffff });
  assert.equal(buf.byteLength, 16);
  assert.deepEqual([...new Uint32Array(buf)], [7, 2, 0xffffffff, 0]);
  // f32 fields (no kernel has one today) are stored as float32 in their slot.
  const mixed = defineKernel({
    name: "probe",
    source: "",
    bindings: ["uniform"],
    uniforms: [["count", "u32"], ["cols", "u32"], ["row0", "u32"], ["method", "u32"], ["a", "f32"], ["b", "f32"]],
    workgroups: () => 1,
  });
  const s = packUniforms(mixed, { count: 1, cols: 2, row0: 3, method: 3, a: 0.7, b: -0.25 });
  assert.equal(s.byteLength, 32);
  assert.deepEqual([...new Uint32Array(s, 0, 4)], [1, 2, 3, 3]);
  assert.deepEqual([...new Float32Array(s, 16, 2)], [Math.fround(0.7), -0.25]);
  assert.equal(packUniforms(score, { count: 1, cols: 2, row0: 3, method: 3 }).byteLength, 16);
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
