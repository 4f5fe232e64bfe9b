import assert from "node:assert/strict";
import { countBits } from "./mask_bits.ts";

Deno.test("countBits() counts the set bits of any range, as reading them one by one does", () => {
  let s = 12345;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0);
  for (let trial = 0; trial < 200; trial++) {
    const mask = new Uint8Array(1 + (next() % 40));
    // Densities from empty to full, so runs of 0x00 and 0xff bytes occur as well as mixed ones.
    const density = (trial % 5) / 4;
    for (let i = 0; i < mask.length * 8; i++) if (next() / 2 ** 32 < density) mask[i >> 3]! |= 1 << (i & 7);
    const start = next() % (mask.length * 8 + 1), end = start + (next() % (mask.length * 8 - start + 1));
    let want = 0;
    for (let i = start; i < end; i++) want += (mask[i >> 3]! >> (i & 7)) & 1;
    assert.equal(countBits(mask, start, end), want, `[${start}, ${end}) of ${mask.length} bytes`);
  }
});
