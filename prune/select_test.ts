import assert from "node:assert/strict";
import {
  histogramHigh,
  histogramLow,
  markBelow,
  markGather,
  markTies,
  radixSelect,
  selectNM,
  selectRows,
} from "./select.ts";

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

/** Keys of one of several shapes: narrow (ties inside one top-11-bit bucket), scores-like floats, wide, extremes. */
function rowKeys(n: number, seed: number, kind: number): Uint32Array {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 1;
  const out = new Uint32Array(n);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    const x = next();
    if (kind === 0) out[i] = 0x3f000000 + (x % 3); // mostly ties, all in one bucket
    else if (kind === 1) out[i] = 0x3c000000 + (x % 5) * 0x11 + ((x >>> 20) % 2) * 0x200000; // ties in two buckets
    else if (kind === 2) {
      f[0] = (x / 2 ** 31) * (1 + (i % 7)) * 0.02; // scores-like: spread over a few octaves
      out[i] = u[0]!;
    } else if (kind === 3) out[i] = x; // any key below 2^31
    else out[i] = [0, 0x7f7fffff, 0x7fffffff, 0x7f800000, 1][x % 5]!; // zero, the largest keys
  }
  return out;
}

/** Sort-based oracle of selectRows() over rows [r0, r1). */
function oracleRows(k: Uint32Array, cols: number, count: number, r0: number, r1: number): Set<number> {
  const want = new Set<number>();
  for (let r = r0; r < r1; r++) for (const i of lowest(k, r * cols, (r + 1) * cols, count)) want.add(i);
  return want;
}

Deno.test("selectRows() matches a sort on rows of any width, k from 0 to cols, ties straddling the cut", () => {
  const widths = [...Array.from({ length: 17 }, (_, i) => i + 1), 23, 31, 32, 33, 39, 40, 63, 64, 65, 100, 257, 1000];
  for (const cols of widths) {
    const rows = 11;
    for (let kind = 0; kind < 5; kind++) {
      const k = rowKeys(rows * cols, cols * 7 + kind + 1, kind);
      const counts = new Set([0, 1, 2, cols >> 1, cols - 1, cols].filter((c) => c >= 0 && c <= cols));
      for (const count of counts) {
        const mask = new Uint8Array(Math.ceil(k.length / 8));
        selectRows(k, cols, count, mask, 0, rows);
        assert.deepEqual(
          bits(mask, k.length),
          oracleRows(k, cols, count, 0, rows),
          `cols ${cols} kind ${kind} k ${count}`,
        );
      }
    }
  }
});

Deno.test("selectRows() gives the same bits run in parts split at whole mask bytes as in one", () => {
  for (const cols of [5, 12, 37, 96]) {
    const rows = 40, step = 8 / [1, 2, 4, 8].filter((g) => cols % g === 0).pop()!;
    const k = rowKeys(rows * cols, cols, 1);
    const count = Math.floor(cols * 0.6);
    const whole = new Uint8Array(Math.ceil(k.length / 8)), parted = new Uint8Array(whole.length);
    selectRows(k, cols, count, whole, 0, rows);
    const splits = [0, step, 3 * step, 4 * step, rows];
    for (let p = 0; p + 1 < splits.length; p++) selectRows(k, cols, count, parted, splits[p]!, splits[p + 1]!);
    assert.deepEqual(parted, whole, `cols ${cols}`);
    assert.deepEqual(bits(whole, k.length), oracleRows(k, cols, count, 0, rows));
    // A part alone touches only its rows' bits.
    const one = new Uint8Array(whole.length);
    selectRows(k, cols, count, one, step, 3 * step);
    assert.deepEqual(bits(one, k.length), oracleRows(k, cols, count, step, 3 * step), `cols ${cols}, one part`);
  }
});

Deno.test("markGather() marks keys below a top-16-bit bucket and copies its (index, key) pairs from `at`", () => {
  // A range with a head, whole bytes and a tail (3..29): keys in buckets 0x3e00, 0x3f00 and 0x4000.
  const n = 32, start = 3, end = 29, top = 0x3f00, at = 5;
  const k = new Uint32Array(n).map((_, i) => [0x3e000001, 0x3f000000 + (i % 3), 0x40000000][(i * 7) % 3]!);
  const mask = new Uint8Array(n / 8), out = new Uint32Array(2 * (at + n)).fill(0xdead);
  const copied = markGather(k, start, end, top, mask, out, at);
  // The slow, obvious answer: every index in [start, end) whose key's top 16 bits are below `top` is marked, and
  // those equal to it are listed in index order.
  const below = new Set<number>(), listed: number[] = [];
  for (let i = start; i < end; i++) {
    if (k[i]! >>> 16 < top) below.add(i);
    if (k[i]! >>> 16 === top) listed.push(i, k[i]!);
  }
  assert.ok(below.size > 0 && listed.length > 0);
  assert.deepEqual(bits(mask, n), below);
  assert.equal(copied, listed.length / 2, "how many pairs it copied, not counting the `at` before them");
  assert.deepEqual(Array.from(out.subarray(2 * at, 2 * at + listed.length)), listed);
  assert.ok(out.subarray(0, 2 * at).every((v) => v === 0xdead), "nothing written before pair `at`");
});

Deno.test("markBelow() over a range with a head, whole bytes and a tail marks exactly the keys below t", () => {
  const n = 40, start = 3, end = 37, t = 5;
  const k = new Uint32Array(n).map((_, i) => (i * 5) % 11);
  const mask = new Uint8Array(n / 8);
  const ties = markBelow(k, start, end, t, mask);
  const want = new Set<number>();
  let equal = 0;
  for (let i = start; i < end; i++) {
    if (k[i]! < t) want.add(i);
    if (k[i]! === t) equal++;
  }
  assert.deepEqual(bits(mask, n), want);
  assert.equal(ties, equal);
});
