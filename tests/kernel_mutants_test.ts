/**
 * Kernel behaviours that a mutation audit of kernels/*.wgsl (2026-12) found no other test holding: for each, a small
 * change to one kernel (a mask bit, a bound's constant, a flag's condition, a loop's end) left every other kernel test
 * passing. Each test runs one kernel alone on a handful of values (at most a few rows of 8193 keys) against an
 * expectation that does not come from the GPU: IEEE 754's definitions (tests/_oracle.ts), float64 arithmetic, the
 * kernel's documented formula or contract, or a sort by (key, index). They are kernel-level because these behaviours
 * are either invisible in a layer's mask on lavapipe (a flag that sends a layer to the exact path, which then gives
 * the right answer; a safety bound that is wide enough on these small layers) or need inputs no layer-level test
 * builds cheaply (every 16-bit pattern, a row one key past a segment, 256 tie blocks). Runs on lavapipe in CI;
 * skipped only where no WebGPU adapter exists.
 */
import assert from "node:assert/strict";
import { bit, oracleDecode } from "./_oracle.ts";
import { GpuEngine } from "../gpu/engine.ts";
import type { KernelDef } from "../gpu/kernel.ts";
import { dispatchKernel } from "../gpu/kernels/_run_kernel.ts";
import { centred, decode, score, selectNm, selectRow, tieScan, Z_SCALARS as Z, zMeans } from "../gpu/kernels/mod.ts";

/** Opened once; null only where no adapter exists at all (then every test here is skipped). */
const engine = await GpuEngine.create({ allowFallback: true });
globalThis.addEventListener("unload", () => engine?.destroy());
const ignore = !engine;

const usage = GPUBufferUsage;

/** A storage buffer holding `data` (its size rounded up to 256 bytes, the rest zero), readable back. */
function buffer(data: Uint32Array<ArrayBuffer> | Float32Array<ArrayBuffer>): GPUBuffer {
  const size = Math.max(256, Math.ceil(data.byteLength / 256) * 256);
  const b = engine!.device.createBuffer({ size, usage: usage.STORAGE | usage.COPY_DST | usage.COPY_SRC });
  engine!.device.queue.writeBuffer(b, 0, data);
  return b;
}

/** Runs `def` on `buffers` with uniforms `u` on its descriptor's grid; returns each of `reads` as u32 words. */
async function run<U extends string>(
  def: KernelDef<U>,
  buffers: GPUBuffer[],
  u: Readonly<Record<U, number>>,
  reads: GPUBuffer[],
): Promise<Uint32Array[]> {
  const device = engine!.device;
  const enc = device.createCommandEncoder();
  const ub = dispatchKernel(device, enc, def, buffers, u);
  const copies = reads.map((src) => {
    const dst = device.createBuffer({ size: src.size, usage: usage.MAP_READ | usage.COPY_DST });
    enc.copyBufferToBuffer(src, 0, dst, 0, src.size);
    return dst;
  });
  device.queue.submit([enc.finish()]);
  const out: Uint32Array[] = [];
  for (const c of copies) {
    await c.mapAsync(GPUMapMode.READ);
    out.push(new Uint32Array(c.getMappedRange().slice(0)));
    c.destroy();
  }
  ub.destroy();
  for (const b of buffers) b.destroy();
  return out;
}

/** decode.wgsl on 16-bit patterns (dtype 1 f16, 2 bf16) or 32-bit ones (0): the f32 values and its two `bad` words. */
async function decodeBits(bits: number[], dtype: 0 | 1 | 2): Promise<{ values: Float32Array; bad: number[] }> {
  const raw = dtype === 0
    ? new Uint32Array(bits)
    : new Uint32Array(Uint16Array.from([...bits, 0]).buffer, 0, Math.ceil(bits.length / 2));
  const w = buffer(new Float32Array(bits.length)), bad = buffer(new Uint32Array([0xffffffff, 0]));
  const [v, b] = await run(decode, [buffer(raw.slice()), w, bad], { count: bits.length, dtype, base: 0 }, [w, bad]);
  return { values: new Float32Array(v!.buffer, 0, bits.length), bad: [b![0]!, b![1]!] };
}

Deno.test({
  name: "decode: every f16 and bf16 bit pattern widens exactly; a non-finite one decodes to 0 and is reported first",
  ignore,
  async fn() {
    const all = Array.from({ length: 65536 }, (_, h) => h);
    for (const [dtype, name] of [[1, "f16"], [2, "bf16"]] as const) {
      const { values, bad } = await decodeBits(all, dtype);
      const bytes = new Uint8Array(Uint16Array.from(all).buffer);
      const want = oracleDecode(bytes, name);
      // The oracle widens from IEEE 754's definition (f16 subnormals scale by 2^-24 and keep their sign); the kernel
      // must agree on every pattern, -0 included, and turn infinities and NaNs into 0 for the later passes.
      const firstBad = want.findIndex((x) => !Number.isFinite(x));
      for (let h = 0; h < 65536; h++) {
        const x = Number.isFinite(want[h]!) ? want[h]! : 0;
        if (!Object.is(values[h], x)) assert.fail(`${name} 0x${h.toString(16)}: ${values[h]}, want ${x}`);
      }
      // The first non-finite pattern is the infinity 0x7c00 (f16) or 0x7f80 (bf16), before any NaN.
      assert.equal(bad[0], firstBad, `${name}: first non-finite index`);
    }
  },
});

Deno.test({
  name: "decode: an f32 or bf16 weight is flagged subnormal for any nonzero mantissa bit, and never otherwise",
  ignore,
  async fn() {
    // The flag is one word for the whole tile, so each pattern runs alone. bf16 keeps 7 mantissa bits, f32 23: the
    // highest alone (0x40, 0x400000) and the lowest alone are subnormal, the smallest normal and -0 are not.
    const cases: [0 | 2, number, number][] = [
      [2, 0x0040, 1],
      [2, 0x8001, 1],
      [2, 0x007f, 1],
      [2, 0x0080, 0],
      [2, 0x8000, 0],
      [2, 0x0000, 0],
      [0, 0x00400000, 1],
      [0, 0x80000001, 1],
      [0, 0x00800000, 0],
      [0, 0x80000000, 0],
    ];
    for (const [dtype, bits, flagged] of cases) {
      const one = dtype === 0 ? 0x3f800000 : 0x3f80; // 1.0 on either side
      const { bad } = await decodeBits([one, bits, one], dtype);
      assert.equal(bad[1], flagged, `${dtype === 0 ? "f32" : "bf16"} 0x${bits.toString(16)}`);
    }
  },
});

/** 2^-24: one rounding of f32, relative. */
const ULP = 2 ** -24;

Deno.test({
  name: "z_means: thr is 0.1·mean|W| and thr_err the documented bound, 2·(ceil(cols/2048) + ceil(rows/2048) + 42) ULPs",
  ignore,
  async fn() {
    // Line sums as row_stats and col_stats would give them for a 3x5 matrix of w = i + 1 (exact in f32). thr_err is
    // what centred.wgsl counts `near` weights within; a smaller one would let a weight the CPU counts otherwise go
    // unseen (z_means.wgsl's comment derives the bound; here cols and rows < 2048 each give one step).
    const rows = 3, cols = 5, n = rows * cols;
    const w = Array.from({ length: n }, (_, i) => i + 1);
    const sum = (xs: number[], f: (x: number) => number) => xs.reduce((a, x) => a + f(x), 0);
    const line = (xs: number[]) => [sum(xs, (x) => x * x), sum(xs, (x) => x), sum(xs, Math.abs)];
    const rowSt = Array.from({ length: rows }, (_, r) => line(w.slice(r * cols, (r + 1) * cols))).flat();
    const colSt = Array.from({ length: cols }, (_, j) => line(w.filter((_, i) => i % cols === j))).flat();
    const scalars = buffer(new Float32Array(12));
    const [got] = await run(zMeans, [buffer(new Float32Array(rowSt)), buffer(new Float32Array(colSt)), scalars], {
      rows,
      cols,
      n,
    }, [scalars]);
    const f = new Float32Array(got!.buffer);
    const thr = 0.1 * (sum(w, Math.abs) / n); // 0.8
    assert.ok(Math.abs(f[Z.thr]! - thr) <= 4 * ULP * thr, `thr ${f[Z.thr]} vs ${thr}`);
    const steps = Math.ceil(cols / 2048) + Math.ceil(rows / 2048) + 42;
    assert.equal(f[Z.thrErr], Math.fround(f[Z.thr]! * 2 * steps * ULP), "thr_err");
    // The means of W/‖row‖ and of W/‖col‖, against float64.
    const meanR = rowSt.reduce((a, _, i) => i % 3 === 1 ? a + rowSt[i]! / Math.sqrt(rowSt[i - 1]!) : a, 0) / n;
    const meanC = colSt.reduce((a, _, i) => i % 3 === 1 ? a + colSt[i]! / Math.sqrt(colSt[i - 1]!) : a, 0) / n;
    assert.ok(Math.abs(f[Z.meanR]! - meanR) <= 1e-6 * meanR, `mean_r ${f[Z.meanR]} vs ${meanR}`);
    assert.ok(Math.abs(f[Z.meanC]! - meanC) <= 1e-6 * meanC, `mean_c ${f[Z.meanC]} vs ${meanC}`);
  },
});

Deno.test({
  name: "centred: a weight exactly at thr is not small (|W| < thr, as the CPU), one exactly thr_err from it is near",
  ignore,
  async fn() {
    // thr = 1/4 and thr_err = 2^-10 (both exact), so every comparison is exact: small counts |W| < thr strictly, as
    // API.md's alpha does; near counts ||W| - thr| <= thr_err, both edges included.
    const thr = 0.25, err = 2 ** -10;
    const v = [thr, -thr, thr - err, -(thr + err), thr + 2 * err, thr - 2 * err, 0.1, 0, 1, -1];
    const count = v.length, cols = count;
    const small = v.filter((x) => Math.abs(x) < thr).length; // thr - err, thr - 2 err, 0.1, 0
    const near = v.filter((x) => Math.abs(Math.abs(x) - thr) <= err).length; // ±thr, thr - err, -(thr + err)
    const stats = (lines: number) => new Float32Array(lines * 3).fill(1);
    const sc = new Float32Array(12);
    sc[Z.thr] = thr;
    sc[Z.thrErr] = err;
    const part = buffer(new Uint32Array(4));
    const [got] = await run(
      centred,
      [buffer(new Float32Array(v)), buffer(stats(1)), buffer(stats(cols)), buffer(sc), part],
      { count, cols, row0: 0, wg0: 0 },
      [part],
    );
    assert.deepEqual([got![2], got![3]], [small, near], "[small, near]");
  },
});

/** The bits of `x` as an f32: a score's u32 key, or an activation's mantissa word. */
const key = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]!;

/** score.wgsl on one row of weights `v`: the scores and whether it set flags[1] (the host's exact path). */
async function scoreRow(
  method: number,
  v: number[],
  rowSt: number[],
  colSt: number[],
  act: [number, number],
  sc = new Float32Array(12),
): Promise<{ scores: Float32Array; flagged: number }> {
  const cols = v.length;
  const a = new Uint32Array(2 * cols);
  for (let j = 0; j < cols; j++) [a[2 * j], a[2 * j + 1]] = [key(act[0]), act[1] >>> 0];
  const ws = buffer(new Float32Array(v)), flags = buffer(new Uint32Array([0xffffffff, 0]));
  const col = Array.from({ length: cols }, () => colSt).flat();
  const [s, f] = await run(
    score,
    [buffer(new Float32Array(rowSt)), buffer(new Float32Array(col)), buffer(a), buffer(sc), ws, flags],
    { count: cols, cols, row0: 0, method },
    [ws, flags],
  );
  return { scores: new Float32Array(s!.buffer, 0, cols), flagged: f![1]! };
}

Deno.test({
  name: "score: a subnormal RIA quotient or Z-Pruner z-score³ is flagged on either axis, though act makes it normal",
  ignore,
  async fn() {
    // act = 2^100 lifts every score here well into f32's normal range, so only the `tiny` test can flag them; a GPU
    // may flush the subnormal term to zero, so the host must take the exact path (score.wgsl's header).
    const act: [number, number] = [1, 100];
    const a = 1e-32;
    // RIA: a / 1e7 is subnormal (the row's quotient, then the column's), the other quotient 1e-34; the sum < 2^-100.
    for (const [row, col] of [[1e7, 1e2], [1e2, 1e7]] as const) {
      const { flagged } = await scoreRow(2, [a], [0, 0, row], [0, 0, col], act);
      assert.equal(flagged, 1, `RIA, row sum ${row}, column sum ${col}`);
    }
    // Z-Pruner: norms of 1 (W/‖line‖ = W exactly); one axis's z is 0 (W on its mean), the other's 2^-25 · 2^-20,
    // below 2^-41: its cube is subnormal.
    const w = 0.5, off = w - 2 ** -25;
    for (const axis of ["row", "col"]) {
      const sc = new Float32Array(12);
      sc[Z.meanR] = axis === "row" ? off : w;
      sc[Z.meanC] = axis === "row" ? w : off;
      sc[Z.invStdR] = sc[Z.invStdC] = 2 ** -20;
      sc[Z.alpha] = 0.5;
      const { scores, flagged } = await scoreRow(3, [w], [1, 0, 0], [1, 0, 0], act, sc);
      assert.ok(scores[0]! > 2 ** -126, `${axis}: a normal score ${scores[0]}`);
      assert.equal(flagged, 1, `Z-Pruner, tiny z on the ${axis} axis`);
    }
  },
});

Deno.test({
  name: "score: a subnormal term beside a sum of at least 2^-100 is not flagged (it moves the sum by under 2^-26)",
  ignore,
  async fn() {
    // The same subnormal terms as above, now next to a normal one: a GPU that flushes them changes the score by far
    // less than the band, so the layer stays on the GPU (score.wgsl's header).
    const act: [number, number] = [1, 0];
    const a = 1e-32;
    // RIA: a / 1e7 is subnormal, a / 1e-3 = 1e-29 is above 2^-100.
    for (const [row, col] of [[1e7, 1e-3], [1e-3, 1e7]] as const) {
      const { flagged } = await scoreRow(2, [a], [0, 0, row], [0, 0, col], act);
      assert.equal(flagged, 0, `RIA, row sum ${row}, column sum ${col}`);
    }
    // Z-Pruner: one axis's z is 2^-45 (its cube subnormal), the other's 0.5.
    const w = 0.5, off = w - 2 ** -25;
    for (const axis of ["row", "col"]) {
      const sc = new Float32Array(12);
      sc[Z.meanR] = axis === "row" ? off : 0;
      sc[Z.meanC] = axis === "row" ? 0 : off;
      sc[Z.invStdR] = axis === "row" ? 2 ** -20 : 1;
      sc[Z.invStdC] = axis === "row" ? 1 : 2 ** -20;
      sc[Z.alpha] = 0.5;
      const { flagged } = await scoreRow(3, [w], [1, 0, 0], [1, 0, 0], act, sc);
      assert.equal(flagged, 0, `Z-Pruner, tiny z on the ${axis} axis beside a z of 0.5`);
    }
  },
});

Deno.test({
  name: "score: a zero activation gives a zero score without asking for the exact path (Wanda, RIA)",
  ignore,
  async fn() {
    // 0 · act is exact on both backends: only a nonzero score before the activation times a nonzero activation can
    // fall into the subnormals, so a column of actNormSq 0 (a dead input) must not send the layer to the CPU.
    for (const method of [1, 2]) {
      const { scores, flagged } = await scoreRow(method, [0.5, -0.25], [1, 0, 1], [1, 0, 1], [0, 0]);
      assert.deepEqual([...scores], [0, 0], `method ${method}`);
      assert.equal(flagged, 0, `method ${method}: flagged`);
    }
  },
});

Deno.test({
  name: "score: Wanda's |W|·act is exact when act_j = m·2^e needs all three scaling steps (|W| = 2^127, e = -254)",
  ignore,
  async fn() {
    // times() scales (|W| / 2)·m by 2^(e + 1) in up to three exact steps of at most 2^±126 each: here 2^126 · 2 ·
    // 2^-253 = 2^-126, the smallest normal f32, which float64 confirms. An activation this small comes from
    // actNormSq^(exponent / 2) with exponent up to 64; a weight this large is still a finite f32.
    const w = 2 ** 127, m = 2, e = -254;
    const { scores, flagged } = await scoreRow(1, [w, -w], [0, 0, 0], [0, 0, 0], [m, e]);
    assert.deepEqual([...scores], [w * m * 2 ** e, w * m * 2 ** e]);
    assert.equal(flagged, 0, "a normal score is not flagged");
  },
});

/**
 * select_nm.wgsl with Z-Pruner's check on one group of `keys` (one row of m = keys.length columns, n pruned), the
 * raw weights `raw` in `dtype`, the error model's rel and k (act_j = 1): its mask word and the count of unsafe groups.
 */
async function nmCheck(keys: number[], n: number, raw: Uint32Array<ArrayBuffer>, dtype: number, rel: number, k = 0) {
  const m = keys.length;
  const sc = new Float32Array(12);
  sc[Z.rel] = rel;
  sc[Z.k] = k;
  const mask = buffer(new Uint32Array(1)), flags = buffer(new Uint32Array(2));
  const [mk, f] = await run(
    selectNm,
    [buffer(new Uint32Array(keys)), buffer(sc), buffer(new Float32Array(m).fill(1)), buffer(raw), mask, flags],
    { groups: 1, m, n, base: 0, cols: m, check: 1, dtype },
    [mask, flags],
  );
  return { mask: mk![0]!, unsafe: f![1]! };
}

Deno.test({
  name: "select_nm: zero weights of either sign, in either half of a 16-bit word, are not checked against each other",
  ignore,
  async fn() {
    // Zero weights score from the means alone, so their order (act_j, then the index) is the same on both backends:
    // a pruned zero against a kept zero is never unsafe, even with a score error (rel = 1e-3) far past the band.
    // Between two nonzero weights of equal score the same rel makes the group unsafe: the check is live here.
    const zero = Math.fround(1e-4), big = Math.fround(1);
    const keys = [zero, big, zero, big].map(key);
    // f16 [+0, 1, -0, 1]: the zeros are the low halves of their words, the ones (0x3c00) the high halves.
    const f16 = new Uint32Array([0x3c000000, 0x3c008000]);
    // f32 [+0, 1, -0, 1].
    const f32 = new Uint32Array([0, 0x3f800000, 0x80000000, 0x3f800000]);
    for (const [raw, dtype, what] of [[f16, 1, "f16"], [f32, 0, "f32"]] as const) {
      const got = await nmCheck(keys, 1, raw, dtype, 1e-3);
      assert.equal(got.mask, 0b0001, `${what}: the lower-index zero is pruned`);
      assert.equal(got.unsafe, 0, `${what}: zero against zero`);
    }
    const nonzero = await nmCheck(keys, 1, new Uint32Array([0x3f000000, 0x3f800000, 0x3f000000, 0x3f800000]), 0, 1e-3);
    assert.equal(nonzero.unsafe, 1, "two nonzero weights of one score, rel 1e-3");
  },
});

Deno.test({
  name:
    "select_nm: a group is unsafe exactly when a pruned score's upper bound, less half the band, passes a kept one's",
  ignore,
  async fn() {
    // The bounds of select_nm.wgsl's header from float64: an f32 score s lies within s·(1 ∓ d/∛s)³ of the exact one
    // (rel 0 here). Pruned 1 against kept 1.05, d = 0.01: 1.01³ = 1.0303 passes 1.05·(1 - 0.01/∛1.05)³ = 1.0193, so
    // the CPU might keep the other one; against kept 1.08 (lower bound 1.0487) it cannot. Both decisions are a 1 %
    // or more from the edge, far beyond pow's cube-root error.
    const upper = (s: number, d: number) => s * (1 + d / Math.cbrt(s)) ** 3;
    const lower = (s: number, d: number) => s * Math.max(0, 1 - d / Math.cbrt(s)) ** 3;
    const raw = new Uint32Array([key(1), key(1), key(1), key(1)]); // nonzero weights
    const d = 0.01;
    for (const kept of [1.05, 1.08]) {
      const unsafe = upper(1, d) * (1 - 5e-6) > lower(kept, d) ? 1 : 0;
      const got = await nmCheck([key(1), key(kept), key(4), key(4)], 1, raw, 0, 0, d);
      assert.equal(got.mask, 0b0001);
      assert.equal(got.unsafe, unsafe, `pruned 1, kept ${kept}, d ${d}: unsafe ${unsafe}`);
    }
    // With no error at all (k = rel = 0), scores closer than half the band still count as safe: the contract lets
    // the backends differ there. 1 and 1 + 3e-6 (an f32 apart by 25 ULPs) are such a pair; so are equal scores.
    for (const kept of [1, Math.fround(1 + 3e-6)]) {
      const got = await nmCheck([key(1), key(kept), key(4), key(4)], 1, raw, 0, 0, 0);
      assert.equal(got.unsafe, 0, `pruned 1, kept ${kept}, no error`);
    }
  },
});

Deno.test({
  name: "select_row: a row of 8193 keys (one past a segment) selects its last key too, ties by column index",
  ignore,
  async fn() {
    // select_row walks a row in segments of 8192 keys; the 8193rd is alone in the second. Here it is the row's
    // lowest key, so it must be pruned; the other keys take few values, so the tie-break by index decides the rest.
    const rows = 2, cols = 8193, k = 3000;
    const keys = new Uint32Array(rows * cols).map((_, i) => 1 + (i * 2654435761 >>> 29));
    for (let r = 0; r < rows; r++) keys[r * cols + cols - 1] = 0;
    const mask = buffer(new Uint32Array(Math.ceil(rows * cols / 32)));
    const [got] = await run(selectRow, [buffer(keys), mask], { rows, cols, base: 0, k }, [mask]);
    const bytes = new Uint8Array(got!.buffer); // little-endian words: bit i is byte i >> 3's bit i & 7
    for (let r = 0; r < rows; r++) {
      const order = Array.from({ length: cols }, (_, j) => j).sort((a, b) =>
        keys[r * cols + a]! - keys[r * cols + b]! || a - b
      );
      const pruned = new Set(order.slice(0, k));
      for (let j = 0; j < cols; j++) {
        if (bit(bytes, r * cols + j) !== pruned.has(j)) assert.fail(`row ${r}, column ${j}`);
      }
    }
  },
});

Deno.test({
  name: "tie_scan: every thread's run of counts gets its exclusive prefix, the last thread's included (256 blocks)",
  ignore,
  async fn() {
    // With 256 blocks (2M keys) each thread holds one count, thread 255 too; with 1000, runs of 4 and threads 250
    // to 255 hold none. The prefix says how many ties come before each block in row-major order.
    for (const blocks of [256, 1000]) {
      const counts = new Uint32Array(blocks).map((_, b) => (b * 7) % 5);
      const ties = buffer(counts.slice());
      const [got] = await run(tieScan, [buffer(new Uint32Array([3, 1, 2, 0])), ties], { blocks }, [ties]);
      let sum = 0;
      assert.deepEqual([...got!.subarray(0, blocks)], [...counts].map((c) => (sum += c) - c), `${blocks} blocks`);
    }
  },
});
