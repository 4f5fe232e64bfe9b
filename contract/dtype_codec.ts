/**
 * The wire's dtypes as bytes: decoding little-endian tensor bytes (f32, f16, bf16) into float32, encoding (for
 * tests and benches), and a mask applied to a tensor's bytes in its own dtype. Part of the contract, so the
 * client, the model code and both backends share it. Every f16 and bf16 value is exactly representable in
 * float32, so decoding loses nothing.
 */
import type { DType } from "./api.ts";
import { DTYPE_BYTES } from "./api.ts";

/** f16 bit pattern -> value, built once: a table lookup is the fastest exact decode in JavaScript. */
const F16_TABLE: Float32Array = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

/** Views little-endian u16 data (f16/bf16 bits) without copying; `bytes` must be 2-byte aligned. */
function u16View(bytes: Uint8Array): Uint16Array {
  // Division, not `>> 1`: a shift is 32-bit signed, and would make 2 GiB or more a negative length.
  return new Uint16Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 2));
}

/** Views little-endian f32 data as u32 bits without copying; `bytes` must be 4-byte aligned. */
function u32View(bytes: Uint8Array): Uint32Array {
  return new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 4));
}

/**
 * Elements [start, end) of `bytes` copied to a buffer of their own (so aligned), where the view is not aligned
 * for `dtype`, else undefined. Only the range is copied: a caller decoding a layer in row blocks copies each
 * block once, not the whole layer per block (a worker's view of a SharedArrayBuffer is aligned, never copied).
 */
function misalignedPart(bytes: Uint8Array, dtype: DType, start: number, end: number): Uint8Array | undefined {
  const size = DTYPE_BYTES[dtype];
  return bytes.byteOffset % size === 0 ? undefined : bytes.slice(start * size, end * size);
}

/**
 * Index of the first NaN or infinity in `bytes` of `dtype`, or -1. Tests exponent bits, so it never
 * allocates beyond an alignment copy.
 */
export function firstNonFinite(
  bytes: Uint8Array,
  dtype: DType,
  start = 0,
  end = bytes.byteLength / DTYPE_BYTES[dtype],
): number {
  const part = misalignedPart(bytes, dtype, start, end);
  if (part) {
    const i = firstNonFinite(part, dtype);
    return i < 0 ? -1 : start + i;
  }
  if (dtype === "f32") {
    const u = u32View(bytes);
    for (let i = start; i < end; i++) if ((u[i]! & 0x7f800000) === 0x7f800000) return i;
  } else {
    const u = u16View(bytes);
    const m = dtype === "f16" ? 0x7c00 : 0x7f80;
    for (let i = start; i < end; i++) if ((u[i]! & m) === m) return i;
  }
  return -1;
}

/**
 * Decodes elements [start, end) of `bytes` into `out` (same indices) and returns the index of the first NaN or
 * infinity met, or -1: the check rides along the decode loop (exponent bits all ones) at no extra pass.
 */
export function decodeInto(out: Float32Array, bytes: Uint8Array, dtype: DType, start = 0, end = out.length): number {
  const part = misalignedPart(bytes, dtype, start, end);
  if (part) {
    const i = decodeInto(out.subarray(start, end), part, dtype);
    return i < 0 ? -1 : start + i;
  }
  let bad = 0;
  if (dtype === "f32") {
    const u = u32View(bytes);
    const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = start; i < end; i++) {
      const x = u[i]!;
      o[i] = x;
      bad |= ((x & 0x7f800000) >>> 23) + 1; // 0x100 exactly when the exponent is all ones
    }
    return bad & 0x100 ? firstNonFinite(bytes, dtype, start, end) : -1;
  }
  const u = u16View(bytes);
  if (dtype === "f16") {
    const t = F16_TABLE;
    for (let i = start; i < end; i++) {
      const h = u[i]!;
      out[i] = t[h]!;
      bad |= (h & 0x7c00) + 0x400; // 0x8000 exactly when the exponent is all ones
    }
    return bad & 0x8000 ? firstNonFinite(bytes, dtype, start, end) : -1;
  }
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = start; i < end; i++) {
    const h = u[i]!;
    o[i] = h << 16;
    bad |= (h & 0x7f80) + 0x80; // 0x8000 exactly when the exponent is all ones
  }
  return bad & 0x8000 ? firstNonFinite(bytes, dtype, start, end) : -1;
}

const BITS = new Uint32Array(1);
const BITS_AS_F32 = new Float32Array(BITS.buffer);

/** Element `i` of little-endian `dtype` data viewed by `view`, as decode() reads it (for a few single elements). */
export function decodeAt(view: DataView, dtype: DType, i: number): number {
  if (dtype === "f32") return view.getFloat32(4 * i, true);
  const h = view.getUint16(2 * i, true);
  if (dtype === "f16") return F16_TABLE[h]!;
  BITS[0] = h << 16;
  return BITS_AS_F32[0]!;
}

/** Decodes a whole tensor into a new Float32Array; `bad` is the first non-finite index or -1. */
export function decode(bytes: Uint8Array, dtype: DType): { values: Float32Array; bad: number } {
  const values = new Float32Array(bytes.byteLength / DTYPE_BYTES[dtype]);
  const bad = decodeInto(values, bytes, dtype);
  return { values, bad };
}

/** float -> f16 bits, rounding to nearest even; overflow gives infinity, NaN stays NaN. */
export function f16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  if (exp === 0xff) return sign | 0x7c00 | ((u & 0x7fffff) ? 0x200 : 0);
  const e = exp - 127 + 15;
  let m = u & 0x7fffff;
  if (e >= 31) return sign | 0x7c00;
  let shift = 13;
  if (e <= 0) {
    if (e < -10) return sign;
    m |= 0x800000; // subnormal in f16: shift the implicit bit in
    shift = 14 - e;
  }
  const rest = m & ((1 << shift) - 1), half = 1 << (shift - 1);
  let h = (e <= 0 ? 0 : e << 10) | (m >>> shift);
  if (rest > half || (rest === half && (h & 1))) h++; // a carry into the exponent is still correct
  return sign | h;
}

/** float -> bf16 bits, rounding to nearest even (NaN stays NaN). */
export function bf16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff)) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Encodes values as little-endian bytes of `dtype`, rounding to nearest even: the inverse of `decode`. */
export function encode(values: ArrayLike<number>, dtype: DType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(Float32Array.from(values).buffer);
  const out = new Uint16Array(values.length);
  const bits = dtype === "f16" ? f16Bits : bf16Bits;
  for (let i = 0; i < values.length; i++) out[i] = bits(values[i]!);
  return new Uint8Array(out.buffer);
}

/** Copies `bytes` and zeroes every element whose mask bit is set: the pruned weights in their own dtype. */
export function applyMaskBytes(bytes: Uint8Array, dtype: DType, mask: Uint8Array): Uint8Array {
  const out = bytes.slice();
  zeroMasked(out, dtype, mask);
  return out;
}

/**
 * Zeroes, in place, every element of `bytes` (row-major `dtype`) whose bit is set in `mask` (bit i = element i, LSB
 * first; bits past the last element are ignored); returns how many were zeroed. Steps over set bits only, through a
 * typed view where the bytes are aligned for one. A mask of any other length than ceil(n / 8) is a RangeError.
 */
export function zeroMasked(bytes: Uint8Array, dtype: DType, mask: Uint8Array): number {
  const size = DTYPE_BYTES[dtype];
  const n = Math.floor(bytes.byteLength / size);
  if (mask.byteLength !== Math.ceil(n / 8)) {
    throw new RangeError(`mask has ${mask.byteLength} bytes; ${n} elements need ${Math.ceil(n / 8)}`);
  }
  const aligned = bytes.byteOffset % size === 0;
  const el = !aligned
    ? null
    : size === 4
    ? new Uint32Array(bytes.buffer, bytes.byteOffset, n)
    : new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  let zeroed = 0;
  for (let b = 0; b < mask.length; b++) {
    let m = mask[b]!;
    while (m !== 0) {
      const i = b * 8 + (31 - Math.clz32(m & -m));
      m &= m - 1;
      if (i >= n) break;
      if (el) el[i] = 0;
      else bytes.fill(0, i * size, i * size + size);
      zeroed++;
    }
  }
  return zeroed;
}

/** How many elements of `bytes` (row-major `dtype`, little-endian) are zero, +0 or -0. */
export function countZeros(bytes: Uint8Array, dtype: DType): number {
  const size = DTYPE_BYTES[dtype];
  const n = Math.floor(bytes.byteLength / size);
  // Aligned bytes (a checkpoint's tensors, as a rule) are read through a typed view, as zeroMasked does; others copied.
  const own = bytes.byteOffset % size === 0 ? bytes : bytes.slice(0, n * size);
  const el = size === 4
    ? new Uint32Array(own.buffer, own.byteOffset, n)
    : new Uint16Array(own.buffer, own.byteOffset, n);
  // All bits but the sign clear: +0 or -0 in f32, f16 and bf16 alike.
  const magnitude = size === 4 ? 0x7fffffff : 0x7fff;
  let zeros = 0;
  for (let i = 0; i < n; i++) if ((el[i]! & magnitude) === 0) zeros++;
  return zeros;
}
