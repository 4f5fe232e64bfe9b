import assert from "node:assert/strict";
import { applyMaskBytes, decode, firstNonFinite } from "./decode.ts";

const u16 = (xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);

Deno.test("decode() reads f16 including subnormals, zero signs and extremes", () => {
  const { values, bad } = decode(u16([0x3c00, 0xc000, 0x0001, 0x8000, 0x7bff, 0x3555]), "f16");
  assert.equal(bad, -1);
  assert.deepEqual(Array.from(values), [1, -2, 2 ** -24, -0, 65504, 0.333251953125]);
});

Deno.test("decode() reads bf16 as the high half of f32 and f32 from unaligned bytes", () => {
  assert.deepEqual(Array.from(decode(u16([0x3f80, 0xc040]), "bf16").values), [1, -3]);
  const raw = new Uint8Array(9);
  raw.set(new Uint8Array(new Float32Array([1.5, -0.25]).buffer), 1);
  assert.deepEqual(Array.from(decode(raw.subarray(1), "f32").values), [1.5, -0.25]);
});

Deno.test("decode() and firstNonFinite() report the first NaN or infinity", () => {
  assert.equal(decode(u16([0x3c00, 0x3c00, 0x7c00, 0x7e00]), "f16").bad, 2);
  assert.equal(decode(u16([0, 0xff80]), "bf16").bad, 1);
  assert.equal(decode(new Uint8Array(new Float32Array([0, 1, 2, NaN]).buffer), "f32").bad, 3);
  assert.equal(firstNonFinite(u16([0x7bff, 0xfbff]), "f16"), -1, "the largest finite f16 values are finite");
});

Deno.test("applyMaskBytes() zeroes exactly the masked elements of a copy", () => {
  const w = u16([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const out = applyMaskBytes(w, "f16", new Uint8Array([0b10000101, 0b1]));
  assert.deepEqual(Array.from(new Uint16Array(out.buffer)), [0, 2, 0, 4, 5, 6, 7, 0, 0]);
  assert.deepEqual(Array.from(new Uint16Array(w.buffer)), [1, 2, 3, 4, 5, 6, 7, 8, 9], "input untouched");
});
