import assert from "node:assert/strict";
import {
  applyMaskBytes,
  bf16Bits,
  countZeros,
  decode,
  decodeAt,
  decodeInto,
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

Deno.test("decodeInto(), firstNonFinite() on an unaligned view give, for any range, what the aligned bytes do", () => {
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (const dtype of ["f32", "f16", "bf16"] as const) {
    const n = 97;
    const values = Array.from({ length: n }, () => (next() - 0.5) * 8);
    const bytes = encode(values, dtype);
    const size = bytes.byteLength / n;
    // Element 60 made an infinity: the index reported must be the layer's, not the range's.
    bytes.set(encode([Infinity], dtype), 60 * size);
    const shifted = new Uint8Array(bytes.byteLength + 1);
    shifted.set(bytes, 1);
    const unaligned = shifted.subarray(1);
    for (const [start, end] of [[0, n], [13, 50], [50, 97], [60, 61], [61, 97], [5, 5]] as const) {
      const want = new Float32Array(n).fill(-1);
      const got = new Float32Array(n).fill(-1);
      const wantBad = decodeInto(want, bytes, dtype, start, end);
      assert.equal(decodeInto(got, unaligned, dtype, start, end), wantBad, `${dtype} [${start}, ${end})`);
      assert.equal(wantBad, start <= 60 && 60 < end ? 60 : -1, `${dtype} [${start}, ${end})`);
      assert.deepEqual(got, want, `${dtype} [${start}, ${end}): elements outside the range stay untouched`);
      assert.equal(firstNonFinite(unaligned, dtype, start, end), wantBad, `${dtype} [${start}, ${end})`);
    }
  }
});

Deno.test("decodeInto() and firstNonFinite() read views of 2 GiB and more by index past 2^29 and 2^30", () => {
  // A 32-bit shift of the byte length (`>> 2`) made these lengths negative: a RangeError, a 500 for the request. The
  // pages are never touched but for the few elements read, so the allocation costs no memory here.
  const big = new Uint8Array(2 ** 31 + 8);
  new DataView(big.buffer).setUint32(2 ** 31 + 4, 0x7f800000, true); // f32 element 2^29 + 1: +infinity
  assert.equal(firstNonFinite(big, "f32", 2 ** 29 - 2, 2 ** 29 + 2), 2 ** 29 + 1);
  // As 16-bit elements, its high half 0x7f80 (element 2^30 + 3) is an infinity in bf16 and a NaN in f16.
  assert.equal(firstNonFinite(big, "bf16", 2 ** 30, 2 ** 30 + 4), 2 ** 30 + 3);
  assert.equal(firstNonFinite(big, "f16", 2 ** 30, 2 ** 30 + 4), 2 ** 30 + 3);
  const out = new Float32Array(2 ** 29 + 2);
  assert.equal(decodeInto(out, big, "f32", 2 ** 29 - 2, 2 ** 29 + 2), 2 ** 29 + 1);
  assert.equal(out[2 ** 29 + 1], Infinity);
});
