import assert from "node:assert/strict";
import {
  applyMaskBytes,
  bf16Bits,
  countZeros,
  decode,
  decodeAt,
  encode,
  f16Bits,
  firstNonFinite,
} from "./dtype_codec.ts";

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

Deno.test("firstNonFinite() tells bf16's largest finite value from infinity by the whole exponent", () => {
  // 0x7f7f is 3.39e38 (exponent 0xfe), 0x7f80 is +infinity (exponent 0xff): only the eight exponent bits 0x7f80
  // all set mean NaN or infinity; 0x7f00 would take 0x7f7f for one.
  assert.equal(firstNonFinite(u16([0x7f7f, 0x7f80]), "bf16"), 1);
  assert.equal(decode(u16([0x7f7f, 0xff7f, 0x7f80]), "bf16").bad, 2);
});

Deno.test("applyMaskBytes() zeroes exactly the masked elements of a copy", () => {
  const w = u16([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const out = applyMaskBytes(w, "f16", new Uint8Array([0b10000101, 0b1]));
  assert.deepEqual(Array.from(new Uint16Array(out.buffer)), [0, 2, 0, 4, 5, 6, 7, 0, 0]);
  assert.deepEqual(Array.from(new Uint16Array(w.buffer)), [1, 2, 3, 4, 5, 6, 7, 8, 9], "input untouched");
});

Deno.test("f16Bits() and bf16Bits() round to nearest even and invert decode()", () => {
  // Exact values survive; halfway cases go to the even neighbour; overflow saturates to infinity.
  assert.equal(f16Bits(1), 0x3c00);
  assert.equal(f16Bits(-2), 0xc000);
  assert.equal(f16Bits(2 ** -24), 0x0001, "smallest subnormal");
  assert.equal(f16Bits(1 + 2 ** -11), 0x3c00, "halfway between 1 and the next f16: to even (1)");
  assert.equal(f16Bits(1 + 3 * 2 ** -11), 0x3c02, "halfway above an odd mantissa: up to even");
  assert.equal(f16Bits(65520), 0x7c00, "past the largest finite f16: infinity");
  assert.equal(f16Bits(65504), 0x7bff, "the largest finite f16 stays finite");
  assert.equal(f16Bits(70000), 0x7c00, "an f16 exponent of 31 without rounding: infinity, not NaN");
  assert.equal(f16Bits(-1e5), 0xfc00, "negative overflow: minus infinity");
  assert.equal(f16Bits(2 ** -26), 0, "below half the smallest subnormal: zero");
  assert.equal(bf16Bits(1 + 2 ** -8), 0x3f80, "halfway: to even");
  assert.equal(bf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  // Every finite f16 and bf16 value encodes back to its own bits.
  const all = new Uint16Array(65536).map((_, i) => i);
  for (const dtype of ["f16", "bf16"] as const) {
    const { values } = decode(new Uint8Array(all.buffer), dtype);
    const back = new Uint16Array(encode(values, dtype).buffer);
    for (let h = 0; h < 65536; h++) {
      if (Number.isFinite(values[h]!)) assert.equal(back[h], h, `${dtype} 0x${h.toString(16)}`);
    }
  }
});

Deno.test("decodeAt() reads single elements as decode() reads them, for every f16 and bf16 pattern", () => {
  const all = new Uint16Array(65536).map((_, h) => h);
  const bytes = new Uint8Array(all.buffer);
  const view = new DataView(all.buffer);
  for (const dtype of ["f16", "bf16"] as const) {
    const { values } = decode(bytes, dtype);
    for (let i = 0; i < 65536; i++) {
      assert.ok(Object.is(decodeAt(view, dtype, i), values[i]), `${dtype} 0x${i.toString(16)}`);
    }
  }
  const f32 = new Float32Array([0, -0, 1.5, -3e38, 1e-45, Infinity]);
  const v32 = new DataView(f32.buffer);
  f32.forEach((x, i) => assert.ok(Object.is(decodeAt(v32, "f32", i), x), `f32 ${x}`));
});

Deno.test("countZeros() counts +0 and -0 in every dtype, and nothing else (subnormals, NaN), unaligned too", () => {
  // f16: +0, -0, the smallest subnormal, NaN, 1; bf16 the same patterns; f32 +0, -0, 2^-149, NaN.
  const u16 = (xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);
  assert.equal(countZeros(u16([0x0000, 0x8000, 0x0001, 0x7e00, 0x3c00]), "f16"), 2);
  assert.equal(countZeros(u16([0x0000, 0x8000, 0x0001, 0x7fc0, 0x3f80]), "bf16"), 2);
  const f32 = new Uint8Array(new Float32Array([0, -0, 2 ** -149, NaN]).buffer);
  assert.equal(countZeros(f32, "f32"), 2);
  const unaligned = new Uint8Array(f32.length + 1);
  unaligned.set(f32, 1);
  assert.equal(countZeros(unaligned.subarray(1), "f32"), 2);
});
