import assert from "node:assert/strict";
import { histogramHigh, histogramLow, markBelow, markTies, radixSelect, selectNM, selectRows } from "./select.ts";

/** Seeded keys in a narrow range, so exact ties are frequent. */
function keys(n: number, seed: number, spread: number): Uint32Array {
  let s = seed;
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = 0x3f000000 + ((s >>> 8) % spread);
  }
  return out;
}

/** Sort-based reference: the k lowest (key, index) of [start, end). */
function lowest(k: Uint32Array, start: number, end: number, count: number): Set<number> {
  const idx = Array.from({ length: end - start }, (_, i) => start + i);
  idx.sort((a, b) => k[a]! - k[b]! || a - b);
  return new Set(idx.slice(0, count));
}

function bits(mask: Uint8Array, n: number): Set<number> {
  const s = new Set<number>();
  for (let i = 0; i < n; i++) if ((mask[i >> 3]! >> (i & 7)) & 1) s.add(i);
  return s;
}

Deno.test("radixSelect() finds the k-th lowest key and the count below it", () => {
  for (const bitsWide of [8, 16] as const) {
    for (const spread of [3, 1000, 1 << 24]) {
      const k = keys(1001, spread, spread);
      const sorted = [...k].sort((a, b) => a - b);
      for (const rank of [1, 2, 500, 1000, 1001]) {
        const r = radixSelect(k, 0, k.length, rank, bitsWide, new Uint32Array(1 << bitsWide));
        assert.equal(r.threshold, sorted[rank - 1]);
        assert.equal(r.below, sorted.filter((x) => x < r.threshold).length);
      }
    }
  }
});

Deno.test("selectRows() and selectNM() select per row and per group, rows not byte-aligned", () => {
  const rows = 13, cols = 15;
  const k = keys(rows * cols, 5, 4);
  const mask = new Uint8Array(Math.ceil(k.length / 8));
  selectRows(k, cols, 6, mask, 0, rows);
  const want = new Set<number>();
  for (let r = 0; r < rows; r++) for (const i of lowest(k, r * cols, (r + 1) * cols, 6)) want.add(i);
  assert.deepEqual(bits(mask, k.length), want);
  for (const [n, m] of [[2, 4], [1, 4], [3, 4], [1, 3], [3, 5], [4, 8], [20, 40]]) {
    const c = m! * 3;
    const kk = keys(rows * c, 3, 3);
    const nm = new Uint8Array(Math.ceil(kk.length / 8));
    selectNM(kk, c, n!, m!, nm, 0, rows);
    const w = new Set<number>();
    for (let g = 0; g < kk.length; g += m!) for (const i of lowest(kk, g, g + m!, n!)) w.add(i);
    assert.deepEqual(bits(nm, kk.length), w, `${n}:${m}`);
  }
});

Deno.test("markBelow() counts ties and markTies() takes them in index order within a range", () => {
  const k = new Uint32Array([5, 1, 5, 9, 5, 0, 5]);
  const mask = new Uint8Array(1);
  assert.equal(markBelow(k, 1, 7, 5, mask), 3);
  assert.deepEqual(bits(mask, 7), new Set([1, 5]));
  markTies(k, 1, 7, 5, 2, mask);
  assert.deepEqual(bits(mask, 7), new Set([1, 2, 4, 5]));
});

Deno.test("histogramHigh() and histogramLow() count the high digit, then the low digit under one high", () => {
  const k = new Uint32Array([0x00010002, 0x00010002, 0x00010003, 0x00020002, 0xffff0000]);
  const hi = histogramHigh(k, 0, 5);
  assert.deepEqual([hi[1], hi[2], hi[0xffff]], [3, 1, 1]);
  const lo = histogramLow(k, 1, 5, 1);
  assert.deepEqual([lo[2], lo[3], lo[0]], [1, 1, 0]);
});
