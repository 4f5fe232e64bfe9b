/** Counting the pruned weights of a bit-packed mask (API.md: bit i of the row-major order, LSB first, 1 = pruned). */

/** Bits set in each byte value. */
const POPCOUNT: Uint8Array = (() => {
  const t = new Uint8Array(256);
  for (let i = 1; i < 256; i++) t[i] = (i & 1) + t[i >> 1]!;
  return t;
})();

/** Number of set bits among bits [start, end) of `mask`. */
export function countBits(mask: Uint8Array, start: number, end: number): number {
  let count = 0, i = start;
  for (; i < end && (i & 7) !== 0; i++) count += (mask[i >>> 3]! >> (i & 7)) & 1;
  for (; i + 8 <= end; i += 8) count += POPCOUNT[mask[i >>> 3]!]!;
  for (; i < end; i++) count += (mask[i >>> 3]! >> (i & 7)) & 1;
  return count;
}
