/**
 * Every kernel at the edges of its dispatch geometry, with a guard band after each output: the last workgroup part
 * full, tiles that start off a word or block boundary, and the grid the H200 meets at scale (over 65535 workgroups:
 * flattened over x and y, with padding workgroups past the last), built here at a small size by spreading the
 * descriptor's workgroups over y with one or more to spare. A write past an output's end inside its buffer is not
 * clamped by robust buffer access (on any adapter), so each output buffer carries GUARD sentinel words after its
 * logical end that must come back intact, and words before a tile's global offset likewise; outputs that a kernel
 * fully defines are checked against a host oracle (or at least for no sentinel left in them).
 */
import assert from "node:assert/strict";
import { decode as decodeBytes, encode } from "../../contract/dtype_codec.ts";
import { poolSize } from "../buffer_pool.ts";
import { GpuEngine } from "../engine.ts";
import { flattenWorkgroups, type KernelDef } from "../kernel.ts";
import { rng } from "../../tests/_random.ts";
import { dispatchKernel, submitAndRead } from "./_run_kernel.ts";
import {
  apply,
  centred,
  colReduce,
  colStats,
  decode,
  maskLayer,
  rowStats,
  score,
  selectHist,
  selectNm,
  selectPick,
  selectRow,
  tieCount,
  tieScan,
  Z_SCALARS_BYTES,
  zMeans,
  zSpread,
} from "./mod.ts";

const engine = await GpuEngine.create({ allowFallback: true });
globalThis.addEventListener("unload", () => engine?.destroy());

/** Fills guard bands and unwritten outputs; as f32 it is negative (-2.9e-16): no sum, count, score or key here. */
const SENTINEL = 0xa5a5a5a5;
/** Sentinel words after each output's logical end. */
const GUARD = 64;
const usage = GPUBufferUsage;

/**
 * An input buffer as the engine's pool sizes it (a multiple of 256 bytes), its slack past the data filled with `slack`
 * words as a reused buffer holds stale data: 1.0 as f32 by default (it would change any sum), 0 for keys (the lowest
 * key, which any selection would prune).
 */
function input(
  device: GPUDevice,
  data: Uint32Array<ArrayBuffer> | Float32Array<ArrayBuffer>,
  slack = 0x3f800000,
): GPUBuffer {
  const words = new Uint32Array(poolSize(data.byteLength) / 4).fill(slack);
  words.set(new Uint32Array(data.buffer, data.byteOffset, data.length));
  const b = device.createBuffer({ label: "in", size: words.byteLength, usage: usage.STORAGE | usage.COPY_DST });
  device.queue.writeBuffer(b, 0, words);
  return b;
}

/** An output of `initial.length` words followed by GUARD sentinel words. */
interface Output {
  buffer: GPUBuffer;
  words: number;
}

function output(device: GPUDevice, initial: Uint32Array<ArrayBuffer>): Output {
  const all = new Uint32Array(initial.length + GUARD).fill(SENTINEL);
  all.set(initial);
  const buffer = device.createBuffer({
    label: "out",
    size: all.byteLength,
    usage: usage.STORAGE | usage.COPY_SRC | usage.COPY_DST,
  });
  device.queue.writeBuffer(buffer, 0, all);
  return { buffer, words: initial.length };
}

/** `words` sentinel words: an output that the kernel must overwrite wherever it is defined. */
const unwritten = (words: number) => new Uint32Array(words).fill(SENTINEL);

/** Runs `def` over `buffers` on `grid`, then returns `out`'s logical words, its guard band checked intact. */
async function run<U extends string>(
  def: KernelDef<U>,
  buffers: GPUBuffer[],
  u: Readonly<Record<U, number>>,
  grid: readonly [number, number],
  out: Output,
): Promise<Uint32Array<ArrayBuffer>> {
  const device = engine!.device;
  const enc = device.createCommandEncoder({ label: `guard-${def.name}` });
  const ub = dispatchKernel(device, enc, def, buffers, u, grid);
  const all = new Uint32Array(await submitAndRead(device, enc, out.buffer, out.buffer.size));
  ub.destroy();
  return checked(def.name, all, out.words);
}

/** The logical words of a read-back output, its guard band checked intact. */
function checked(what: string, all: Uint32Array<ArrayBuffer>, words: number): Uint32Array<ArrayBuffer> {
  const past = all.subarray(words).findIndex((w) => w !== SENTINEL);
  assert.equal(past, -1, `${what} wrote word ${words + past}, past its output's ${words} words`);
  return all.slice(0, words);
}

/** Another output read back after what was submitted, its guard band checked. */
async function readOut(what: string, out: Output): Promise<Uint32Array<ArrayBuffer>> {
  const device = engine!.device;
  const all = new Uint32Array(await submitAndRead(device, device.createCommandEncoder(), out.buffer, out.buffer.size));
  return checked(what, all, out.words);
}

/**
 * The descriptor's grid as the H200 meets it past 65535 workgroups, at any size: spread over x and y, with at least
 * one padding workgroup past the last.
 */
function padded<U extends string>(def: KernelDef<U>, u: Readonly<Record<U, number>>): [number, number] {
  const [x, y] = flattenWorkgroups(def.workgroups(u));
  assert.equal(y, 1, `${def.name}: a small case`);
  return [Math.ceil((x + 1) / 2), 2];
}

/** Dyadic weights (multiples of 2^-8 in [-1/2, 1/2)): f32 sums of up to 1024 of them or their squares are exact. */
function dyadic(n: number, seed: number): Float32Array<ArrayBuffer> {
  const rand = rng(seed);
  return new Float32Array(n).map(() => (Math.floor(rand() * 256) - 128) / 256);
}

/** Keys from a handful of values, so that many tie. */
function fewKeys(n: number, seed: number): Uint32Array<ArrayBuffer> {
  const rand = rng(seed);
  return new Uint32Array(n).map(() => 1 + Math.floor(rand() * 6));
}

/** Bit i of a mask of u32 words. */
const bit = (mask: Uint32Array, i: number) => (mask[i >>> 5]! >>> (i & 31)) & 1;

/** Asserts that no bit of `mask` from index `end` on (past the tile, in its last word) is set. */
function assertNoBitsFrom(mask: Uint32Array, end: number, what: string): void {
  for (let i = end; i < mask.length * 32; i++) assert.equal(bit(mask, i), 0, `${what}: bit ${i}, past the tile`);
}

const gpu = { ignore: !engine };

Deno.test({
  ...gpu,
  name: "guard band: decode (f16 and f32, an odd count, a padded grid) writes its tile only, exactly",
  async fn() {
    const device = engine!.device;
    for (const dtype of ["f16", "f32"] as const) {
      const count = 256 * 5 + 3, base = 1001;
      const vals = Array.from(dyadic(count, 1));
      vals[count - 1] = NaN; // the last element of the tile: its global index is reported
      const bytes = encode(vals, dtype);
      const padBytes = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
      padBytes.set(bytes);
      const raw = input(device, new Uint32Array(padBytes.buffer));
      const w = output(device, unwritten(count)), bad = output(device, new Uint32Array([0xffffffff, 0]));
      const u = { count, dtype: dtype === "f16" ? 1 : 0, base };
      const got = new Float32Array((await run(decode, [raw, w.buffer, bad.buffer], u, padded(decode, u), w)).buffer);
      const want = decodeBytes(bytes, dtype).values;
      want[count - 1] = 0; // a non-finite weight decodes to 0
      assert.deepEqual(got, want, dtype);
      assert.deepEqual([...await readOut("decode bad", bad)], [base + count - 1, 0], dtype);
      for (const b of [raw, w.buffer, bad.buffer]) b.destroy();
    }
  },
});

Deno.test({
  ...gpu,
  name: "guard band: row_stats, col_stats and col_reduce write their rows, blocks and columns only, exactly",
  async fn() {
    const device = engine!.device;
    const rows = 300, cols = 70, row0 = 2, block0 = 1, blocks = 2; // 300 rows: a second block of 44
    const v = dyadic(rows * cols, 2);
    const wb = input(device, v);
    const sums = (n: number, at: (i: number, k: number) => number, len: number) => {
      const out = new Float32Array(n * 3);
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < len; k++) {
          const x = at(i, k);
          out[3 * i] = out[3 * i]! + x * x;
          out[3 * i + 1] = out[3 * i + 1]! + x;
          out[3 * i + 2] = out[3 * i + 2]! + Math.abs(x);
        }
      }
      return out;
    };
    // row_stats: rows row0.. of the global array, the words before them left alone.
    const rs = output(device, unwritten((row0 + rows) * 3));
    const ru = { rows, cols, row0 };
    const rowGot = await run(rowStats, [wb, rs.buffer], ru, padded(rowStats, ru), rs);
    assert.ok(rowGot.subarray(0, row0 * 3).every((x) => x === SENTINEL), "row_stats wrote before row0");
    const rowWant = sums(rows, (r, j) => v[r * cols + j]!, cols);
    assert.deepEqual(new Float32Array(rowGot.buffer, row0 * 12), rowWant, "row_stats");
    // col_stats: blocks block0.. (its grid is explicit: x strides, y is the block), then col_reduce over all blocks.
    const part = output(device, unwritten((block0 + blocks) * cols * 3));
    const cu = { rows, cols, block0 };
    const partGot = await run(colStats, [wb, part.buffer], cu, flattenWorkgroups(colStats.workgroups(cu)), part);
    assert.ok(partGot.subarray(0, block0 * cols * 3).every((x) => x === SENTINEL), "col_stats wrote before block0");
    for (let b = 0; b < blocks; b++) {
      const r0 = b * 256, n = Math.min(256, rows - r0);
      const want = sums(cols, (j, r) => v[(r0 + r) * cols + j]!, n);
      assert.deepEqual(new Float32Array(partGot.buffer, (block0 + b) * cols * 12, cols * 3), want, `block ${b}`);
    }
    const filled = new Float32Array(partGot.buffer).fill(0, 0, block0 * cols * 3); // block 0 adds nothing
    const pb = input(device, filled);
    const cs = output(device, unwritten(cols * 3));
    const ku = { cols, blocks: block0 + blocks };
    const colGot = await run(colReduce, [pb, cs.buffer], ku, padded(colReduce, ku), cs);
    assert.deepEqual(new Float32Array(colGot.buffer), sums(cols, (j, r) => v[r * cols + j]!, rows), "col_reduce");
    for (const b of [wb, rs.buffer, part.buffer, pb, cs.buffer]) b.destroy();
  },
});

Deno.test({
  ...gpu,
  name: "guard band: centred (a part-full last block, a padding workgroup) writes its partials only, counts exact",
  async fn() {
    const device = engine!.device;
    const rows = 2521, cols = 13, row0 = 3, wg0 = 1, count = rows * cols; // 2 blocks of 16384 and 5 elements
    const wgs = Math.ceil(count / 16384);
    const v = dyadic(count, 3);
    const stats = (n: number) => new Float32Array(n * 3).map((_, i) => (i % 3 === 0 ? 1.5 : 0.25));
    const thr = Math.fround(0.1), thrErr = Math.fround(1 / 256);
    const scalars = new Float32Array(12);
    scalars.set([0.01, -0.02, thr], 0);
    scalars[7] = thrErr;
    const bufs = [
      input(device, v, 0), // stale zeros past the tile would count as small weights
      input(device, stats(row0 + rows)),
      input(device, stats(cols)),
      input(device, scalars),
    ];
    const part = output(device, unwritten((wg0 + wgs) * 4));
    const u = { count, cols, row0, wg0 };
    const got = await run(centred, [...bufs, part.buffer], u, padded(centred, u), part);
    assert.ok(got.subarray(0, wg0 * 4).every((x) => x === SENTINEL), "centred wrote before wg0");
    let small = 0, near = 0;
    for (const x of v) {
      if (Math.abs(x) < thr) small++;
      if (Math.abs(Math.fround(Math.abs(x) - thr)) <= thrErr) near++;
    }
    let gotSmall = 0, gotNear = 0;
    for (let g = wg0; g < wg0 + wgs; g++) {
      const ss = new Float32Array(got.buffer, g * 16, 2);
      assert.ok(ss.every((x) => x >= 0 && Number.isFinite(x)), `workgroup ${g}'s sums ${ss}`);
      gotSmall += got[g * 4 + 2]!;
      gotNear += got[g * 4 + 3]!;
    }
    assert.deepEqual([gotSmall, gotNear], [small, near]);
    for (const b of [...bufs, part.buffer]) b.destroy();
  },
});

Deno.test({
  ...gpu,
  name: "guard band: score (every method, a padded grid) scores its tile in place and writes nothing past it",
  async fn() {
    const device = engine!.device;
    const rows = 143, cols = 9, count = rows * cols; // 5 workgroups and 7 elements
    const v = dyadic(count, 4).map((x) => x + 1 / 512); // no zero weight
    const rowSt = input(device, new Float32Array(rows * 3).fill(2));
    const colSt = input(device, new Float32Array(cols * 3).fill(3));
    const act = new Uint32Array(cols * 2);
    new Float32Array(act.buffer).fill(1.5);
    for (let j = 0; j < cols; j++) act[2 * j + 1] = 0; // act_j = 1.5 * 2^0
    const actBuf = input(device, act);
    const scalars = input(device, new Float32Array([0.01, 0.02, 0, 2, 3, 0.6, 0, 0, 0, 0, 0, 0]));
    for (const method of [0, 1, 2, 3]) {
      const ws = output(device, new Uint32Array(v.buffer.slice(0)));
      const flags = output(device, new Uint32Array([0xffffffff, 0]));
      const u = { count, cols, row0: 0, method };
      const got = await run(score, [rowSt, colSt, actBuf, scalars, ws.buffer, flags.buffer], u, padded(score, u), ws);
      const s = new Float32Array(got.buffer);
      assert.ok(s.every((x) => x > 0 && Number.isFinite(x)), `method ${method}: every weight scored`);
      if (method === 0) assert.deepEqual(s, v.map(Math.abs));
      assert.deepEqual([...await readOut("score flags", flags)], [0xffffffff, 0], `method ${method}`);
      for (const b of [ws.buffer, flags.buffer]) b.destroy();
    }
    for (const b of [rowSt, colSt, actBuf, scalars]) b.destroy();
  },
});

Deno.test({
  ...gpu,
  name: "guard band: the layer select (select_hist, select_pick, tie_count, mask_layer) against an oracle",
  async fn() {
    const device = engine!.device;
    const count = 8192 * 2 + 33, base = 37, block0 = 1, blocks = 3; // a tile off a word boundary, a later block
    const keys = fewKeys(count, 5);
    const kb = input(device, keys, 0);
    // select_hist, passes 0 and 1 of 3 (11-bit digits from bits 21 and 10) over keys of three top digits; pass 1
    // counts the keys whose top digit is the prefix 2.
    const rand = rng(9);
    const hk = new Uint32Array(count).map(() => (((1 + Math.floor(rand() * 3)) << 21) | (rand() * 2 ** 21)) >>> 0);
    const hkb = input(device, hk, 0);
    const hist = output(device, new Uint32Array(3 * 2048));
    const prefix = 2 << 21;
    const state = input(device, new Uint32Array([prefix, 1, 0, 0]));
    const wantHist = new Uint32Array(3 * 2048);
    for (const [pass, shift] of [[0, 21], [1, 10]] as const) {
      const hiMask = pass === 0 ? 0 : 0xffe00000;
      for (const key of hk) {
        if (((key & hiMask) >>> 0) === (prefix & hiMask)) wantHist[pass * 2048 + ((key >>> shift) & 2047)]!++;
      }
      const u = { count, shift, hi_mask: hiMask, pass_index: pass, bins: 2048 };
      const got = await run(selectHist, [hkb, state, hist.buffer], u, padded(selectHist, u), hist);
      assert.deepEqual(got, wantHist, `select_hist pass ${pass}`);
    }
    // select_pick on a histogram with runs of several bins, pass 2 (10 bits from bit 0), the prefix kept.
    const h = new Uint32Array(3 * 2048);
    for (let d = 0; d < 1024; d++) h[2 * 2048 + d] = (d * 7) % 5;
    const hb = input(device, h);
    const want = 1500;
    let before = 0, d = 0;
    while (before + h[2 * 2048 + d]! < want) before += h[2 * 2048 + d++]!;
    const st = output(device, new Uint32Array([0x12345000, want, 0, 0]));
    const picked = await run(selectPick, [hb, st.buffer], { pass_index: 2, shift: 0, bins: 1024 }, [1, 1], st);
    assert.deepEqual([...picked], [0x12345000 | d, want - before, h[2 * 2048 + d]!, 0], "select_pick");
    // tie_count and mask_layer at T = 3 (below: 1 and 2), 5 ties in earlier tiles, `want` of the ties pruned.
    const T = 3, offset = 5;
    const perBlock = Array.from({ length: blocks }, (_, b) => keys.subarray(b * 8192, (b + 1) * 8192))
      .map((k) => k.filter((x) => x === T).length);
    const matching = offset + perBlock.reduce((a, b) => a + b, 0);
    for (const wantTies of [offset + 1000, matching]) { // some ties pruned; every tie (tie ranks unread)
      const sb = input(device, new Uint32Array([T, wantTies, matching, 0]));
      if (wantTies !== matching) {
        const ties = output(device, unwritten(block0 + blocks));
        const tu = { count, block0 };
        const tk = input(device, keys, T); // stale keys past the tile equal to T would count as ties
        const tc = await run(tieCount, [tk, sb, ties.buffer], tu, padded(tieCount, tu), ties);
        tk.destroy();
        assert.deepEqual([...tc], [SENTINEL, ...perBlock], "tie_count");
      }
      const tiesBefore = [
        SENTINEL,
        ...perBlock.map((_, b) => offset + perBlock.slice(0, b).reduce((a, c) => a + c, 0)),
      ];
      const tb = input(device, new Uint32Array(tiesBefore));
      const mask = output(device, new Uint32Array(Math.ceil((base + count) / 32)));
      const mu = { count, base, block0 };
      const got = await run(maskLayer, [kb, sb, tb, mask.buffer], mu, padded(maskLayer, mu), mask);
      let rank = offset;
      for (let i = 0; i < base + count; i++) {
        const k = i < base ? Infinity : keys[i - base]!;
        const pruned = k < T || (k === T && rank++ < wantTies);
        assert.equal(bit(got, i), pruned ? 1 : 0, `mask_layer bit ${i} (want ${wantTies})`);
      }
      assertNoBitsFrom(got, base + count, "mask_layer");
      for (const b of [sb, tb, mask.buffer]) b.destroy();
    }
    for (const b of [kb, hkb, hist.buffer, state, hb, st.buffer]) b.destroy();
  },
});

Deno.test({
  ...gpu,
  name: "guard band: tie_scan (runs of 3 counts, some threads without any) scans in place and writes nothing past",
  async fn() {
    const device = engine!.device;
    const blocks = 600, counts = fewKeys(blocks, 6);
    const st = input(device, new Uint32Array([3, 1, 2, 0])); // want != matching: the scan runs
    const ties = output(device, counts.slice());
    const got = await run(tieScan, [st, ties.buffer], { blocks }, [1, 1], ties);
    let sum = 0;
    assert.deepEqual([...got], [...counts].map((c) => (sum += c) - c));
    for (const b of [st, ties.buffer]) b.destroy();
  },
});

Deno.test({
  ...gpu,
  name: "guard band: select_row and select_nm (padded grids, tiles off a word boundary) against an oracle",
  async fn() {
    const device = engine!.device;
    const base = 37;
    // Groups of `width` keys, `k` lowest of each pruned, ties by index: rows of 8232 (two segments) and 4-key groups.
    const cases = [[selectRow, 3, 8192 + 40, 3000], [selectNm, 513, 4, 2]] as const;
    for (const [def, groups, width, k] of cases) {
      const keys = fewKeys(groups * width, 7);
      const kb = input(device, keys, 0);
      const mask = output(device, new Uint32Array(Math.ceil((base + groups * width) / 32)));
      let got: Uint32Array;
      if (def === selectRow) {
        const u = { rows: groups, cols: width, base, k };
        got = await run(selectRow, [kb, mask.buffer], u, padded(selectRow, u), mask);
      } else {
        const unused = input(device, new Uint32Array(64)), flags = input(device, new Uint32Array(64));
        const u = { groups, m: width, n: k, base, cols: width * 3, check: 0, dtype: 0 };
        got = await run(selectNm, [kb, unused, unused, unused, mask.buffer, flags], u, padded(selectNm, u), mask);
        unused.destroy();
        flags.destroy();
      }
      for (let g = 0; g < groups; g++) {
        const row = Array.from(keys.subarray(g * width, (g + 1) * width), (key, j) => ({ key, j }));
        row.sort((a, b) => a.key - b.key || a.j - b.j);
        const pruned = new Set(row.slice(0, k).map((e) => e.j));
        for (let j = 0; j < width; j++) {
          assert.equal(bit(got, base + g * width + j), pruned.has(j) ? 1 : 0, `${def.name}: group ${g}, key ${j}`);
        }
      }
      for (let i = 0; i < base; i++) assert.equal(bit(got, i), 0, `${def.name}: bit ${i} before the tile`);
      assertNoBitsFrom(got, base + groups * width, def.name);
      for (const b of [kb, mask.buffer]) b.destroy();
    }
  },
});

Deno.test({
  ...gpu,
  name: "guard band: apply (f16, an odd count, a tile off a word boundary) zeroes the pruned halves of its tile only",
  async fn() {
    const device = engine!.device;
    const count = 256 * 2 * 2 + 3, base = 37, words = Math.ceil(count / 2);
    const raw = new Uint32Array(words).map((_, i) => 0x3c003c00 + i); // nonzero halves
    raw[words - 1] = raw[words - 1]! & 0xffff; // the tile's bytes end in its last word's low half
    const rand = rng(8);
    const maskWords = new Uint32Array(Math.ceil((base + count + 32) / 32)).map(() => (rand() * 2 ** 32) >>> 0);
    const rb = input(device, raw), mb = input(device, maskWords);
    const out = output(device, unwritten(words));
    const u = { words, dtype: 1, base, count };
    const got = await run(apply, [rb, mb, out.buffer], u, padded(apply, u), out);
    const want = raw.map((w, i) => {
      const lo = bit(maskWords, base + 2 * i) ? 0 : w & 0xffff;
      const hi = 2 * i + 1 < count && bit(maskWords, base + 2 * i + 1) ? 0 : w >>> 16;
      return ((hi << 16) | lo) >>> 0;
    });
    assert.deepEqual([...got], [...want]);
    for (const b of [rb, mb, out.buffer]) b.destroy();
  },
});

Deno.test({
  ...gpu,
  name: "guard band: z_means and z_spread write their slots of the scalars only (the 12th word and past stay)",
  async fn() {
    const device = engine!.device;
    const rows = 300, cols = 70, n = rows * cols;
    const stats = (lines: number) => new Float32Array(lines * 3).map((_, i) => [4, 0.5, 1.5][i % 3]!);
    const rs = input(device, stats(rows)), cs = input(device, stats(cols));
    const scalars = output(device, unwritten(Z_SCALARS_BYTES / 4));
    await run(zMeans, [rs, cs, scalars.buffer], { rows, cols, n }, [1, 1], scalars);
    const part = new Uint32Array(8);
    new Float32Array(part.buffer).set([2, 3, 0, 0, 4, 5], 0);
    part.set([100, 1], 2);
    part.set([50, 0], 6);
    const pb = input(device, part);
    const u = { count: 2, n, shift: 1e-6, floor: 1e-3, z_rel: 2e-6, alpha_rel: 0.7, near_cap: 10 };
    const got = await run(zSpread, [pb, scalars.buffer], u, [1, 1], scalars);
    assert.ok(got.subarray(0, 11).every((x) => x !== SENTINEL), `slots 0-10 written: ${[...got]}`);
    assert.equal(got[11], SENTINEL, "slot 11 is no kernel's");
    assert.deepEqual([got[6], got[8]], [150, 1], "small and near counts");
    for (const b of [rs, cs, scalars.buffer, pb]) b.destroy();
  },
});
