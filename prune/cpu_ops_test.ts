import assert from "node:assert/strict";
import { runOp, type ScoreResult } from "./cpu_ops.ts";
import { wandaContext } from "../tests/_wanda_context.ts";

/** Seeded keys in a narrow range (exact ties frequent), spread over two top-16-bit buckets. */
function keys(n: number, seed: number): Uint32Array {
  let s = seed;
  return new Uint32Array(n).map(() => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 0x3f000000 + ((s >>> 8) % 4) + ((s >>> 20) % 2) * 0x10000;
  });
}

function bits(mask: Uint8Array, n: number): Set<number> {
  const s = new Set<number>();
  for (let i = 0; i < n; i++) if ((mask[i >> 3]! >> (i & 7)) & 1) s.add(i);
  return s;
}

/** The `count` lowest of [start, end) by (key, index): the contract's selection, by sorting. */
function lowest(k: Uint32Array, start: number, end: number, count: number): number[] {
  const idx = Array.from({ length: end - start }, (_, i) => start + i);
  return idx.sort((a, b) => k[a]! - k[b]! || a - b).slice(0, count);
}

Deno.test("runOp rows and nm select within their own rows [r0, r1) only, with the k or N asked for", () => {
  const rows = 6, cols = 8, k = keys(rows * cols, 7);
  const r0 = 2, r1 = 5;
  const rowMask = new Uint8Array(rows * cols / 8);
  runOp({ op: "rows", keys: k, cols, k: 3, mask: rowMask, r0, r1 });
  const nmMask = new Uint8Array(rows * cols / 8);
  runOp({ op: "nm", keys: k, cols, n: 1, m: 4, mask: nmMask, r0, r1 });
  const wantRows = new Set<number>(), wantNM = new Set<number>();
  for (let r = r0; r < r1; r++) {
    for (const i of lowest(k, r * cols, (r + 1) * cols, 3)) wantRows.add(i);
    for (let g = r * cols; g < (r + 1) * cols; g += 4) for (const i of lowest(k, g, g + 4, 1)) wantNM.add(i);
  }
  assert.deepEqual(bits(rowMask, k.length), wantRows);
  assert.deepEqual(bits(nmMask, k.length), wantNM);
});

Deno.test("runOp histLow, markBelow and markTies answer for their element range and arguments", () => {
  const n = 64, k = keys(n, 3), e0 = 5, e1 = 60, top = 0x3f01;
  const hist = runOp({ op: "histLow", keys: k, e0, e1, top }) as Uint32Array;
  const want = new Map<number, number>();
  for (let i = e0; i < e1; i++) if (k[i]! >>> 16 === top) want.set(k[i]! & 0xffff, (want.get(k[i]! & 0xffff) ?? 0) + 1);
  for (let low = 0; low < 4; low++) assert.equal(hist[low], want.get(low) ?? 0, `low ${low}`);
  const t = 0x3f000002;
  const mask = new Uint8Array(n / 8);
  const ties = runOp({ op: "markBelow", keys: k, e0, e1, t, mask }) as number;
  const range = Array.from({ length: e1 - e0 }, (_, i) => e0 + i);
  assert.equal(ties, range.filter((i) => k[i] === t).length);
  assert.deepEqual(bits(mask, n), new Set(range.filter((i) => k[i]! < t)));
  runOp({ op: "markTies", keys: k, e0, e1, t, quota: 2, mask });
  const firstTwo = range.filter((i) => k[i] === t).slice(0, 2);
  assert.deepEqual(bits(mask, n), new Set([...range.filter((i) => k[i]! < t), ...firstTwo]));
});

Deno.test("runOp score: the first overflow of its rows, and the histogram of its own rows' keys", () => {
  // Wanda scores |w| * act_j into a view that starts 16 bytes into its buffer (as a part of a shared array may).
  const rows = 4, cols = 3;
  const W = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3]);
  const out = new Float32Array(new ArrayBuffer(16 + 4 * rows * cols), 16, rows * cols);
  const r = runOp({ op: "score", W, ctx: wandaContext([1, 0.5, 2]), r0: 1, r1: 3, out, hist: true }) as ScoreResult;
  assert.equal(r.over, -1);
  const scores = [4, 2.5, 12, 7, 4, 18];
  assert.deepEqual(Array.from(out.subarray(3, 9)), scores);
  // The histogram counts the top 16 bits of the keys of rows 1 and 2 (indices 3..8) alone.
  const top = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16;
  const want = new Map<number, number>();
  for (const s of scores) want.set(top(s), (want.get(top(s)) ?? 0) + 1);
  assert.equal(r.hist!.reduce((a, b) => a + b, 0), 6);
  for (const [t, count] of want) assert.equal(r.hist![t], count, `bucket ${t}`);
  // An act that overflows float32 in column 1: row 1's is the first, at index 4.
  const over = runOp({ op: "score", W, ctx: wandaContext([1, 1e38, 1]), r0: 1, r1: 3, out, hist: true }) as ScoreResult;
  assert.equal(over.over, 4);
});
