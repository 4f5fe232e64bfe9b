import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";
import {
  accum,
  addBias,
  Arena,
  ARENA_MAX_BYTES,
  attention,
  type AttentionScratch,
  matmul,
  rmsnorm,
  rope,
  ropeInvFreq,
  ropeTables,
  sumSquares,
  swiglu,
  widenRow,
} from "./ops.ts";
import { decodeToF32 } from "./safetensors.ts";
import { seededRandom } from "./windows.ts";

/** transformers' own snapshot of inverse frequencies (tests/fixtures/rope_inv_freq.json says where from). */
const SNAPSHOT = JSON.parse(
  await Deno.readTextFile(new URL("../tests/fixtures/rope_inv_freq.json", import.meta.url)),
);

/** The snapshot prints 5 significant digits: agree to half a unit of the fifth. */
function assertPrinted(got: Float32Array, printed: number[], what: string): void {
  assert.equal(got.length, printed.length, what);
  printed.forEach((p, i) => assert.ok(Math.abs(got[i]! - p) <= 5e-5 * p, `${what}[${i}]: ${got[i]} vs ${p}`));
}

const BASE = { hidden_size: 4096, num_attention_heads: 32, intermediate_size: 64, num_hidden_layers: 1, vocab_size: 8 };

Deno.test("ropeInvFreq() gives transformers' default and llama3 inverse frequencies", () => {
  const { head_dim, rope_theta } = SNAPSHOT.config;
  assertPrinted(ropeInvFreq(head_dim, rope_theta), SNAPSHOT.default, "default");
  // Through parseConfig, from either place transformers keeps the scaling's fields.
  const scaling = SNAPSHOT.llama3.rope_scaling;
  const older = parseConfig({ ...BASE, rope_theta, rope_scaling: scaling });
  const newer = parseConfig({ ...BASE, rope_parameters: { rope_theta, ...scaling } });
  assert.deepEqual(newer.ropeScaling, older.ropeScaling);
  assertPrinted(ropeInvFreq(older.headDim, older.ropeTheta, older.ropeScaling), SNAPSHOT.llama3.inv_freq, "llama3");
});

Deno.test("ropeInvFreq() llama3: high frequencies as trained, low ones divided by factor, a blend between", () => {
  const plain = ropeInvFreq(128, 500000);
  const cfg = parseConfig({
    ...BASE,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  });
  const scaled = ropeInvFreq(128, 500000, cfg.ropeScaling);
  let kept = 0, divided = 0, blended = 0;
  plain.forEach((x, i) => {
    const wavelen = (2 * Math.PI) / x;
    if (wavelen < 8192 / 4) assert.equal(scaled[i], x, `${i} kept`), kept++;
    else if (wavelen > 8192 / 1) assert.equal(scaled[i], Math.fround(x / 8), `${i} divided`), divided++;
    else {
      assert.ok(scaled[i]! > x / 8 && scaled[i]! < x, `${i} between`);
      blended++;
    }
    // Scaling never raises a frequency, and frequencies stay in order.
    if (i > 0) assert.ok(scaled[i]! < scaled[i - 1]!, `${i} decreasing`);
  });
  assert.ok(kept > 0 && divided > 0 && blended > 0, `${kept} kept, ${divided} divided, ${blended} blended`);
});

Deno.test("ropeTables() with linear scaling turns position p into p / factor", () => {
  const cfg = parseConfig({ ...BASE, rope_scaling: { type: "linear", factor: 4 } });
  const scaled = ropeTables(64, 128, 10000, cfg.ropeScaling), plain = ropeTables(16, 128, 10000);
  assert.deepEqual(ropeInvFreq(128, 10000, cfg.ropeScaling), ropeInvFreq(128, 10000).map((x) => x / 4));
  // Dividing by 4 is exact in binary, so position 4p scaled is position p plain, to the bit.
  for (let p = 0; p < 16; p++) {
    assert.deepEqual(scaled.cos.subarray(4 * p * 64, (4 * p + 1) * 64), plain.cos.subarray(p * 64, (p + 1) * 64));
    assert.deepEqual(scaled.sin.subarray(4 * p * 64, (4 * p + 1) * 64), plain.sin.subarray(p * 64, (p + 1) * 64));
  }
});

Deno.test("matmul() with 16-bit weights gives the float32 matrix's products bit for bit, tails included", () => {
  const next = seededRandom(7);
  for (const dtype of ["bf16", "f16"] as const) {
    for (const [T, n, d] of [[7, 12, 10], [1, 4, 3], [3, 8, 4], [5, 36, 9], [4, 68, 5], [6, 128, 8]] as const) {
      const arena = new Arena(1 << 20);
      const x = arena.f32(T * n), out = arena.f32(T * d), want = arena.f32(T * d), wide = arena.f32(d * n);
      const half = { dtype, data: arena.u16(d * n) };
      x.forEach((_, i) => (x[i] = (next() - 0.5) * 4));
      // Any finite 16-bit value: subnormals, zeros of both signs and the largest included.
      const top = dtype === "f16" ? 0x7c00 : 0x7f80; // an exponent of all ones: infinity or NaN
      for (let i = 0; i < half.data.length;) {
        const bits = Math.floor(next() * 65536);
        if ((bits & top) !== top) half.data[i++] = bits;
      }
      widenRow(wide, half, 0, d * n);
      matmul(want, x, wide, T, n, d);
      matmul(out, x, half, T, n, d);
      const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
      const same = (a: Float32Array, b: Float32Array) => bits(a).every((v, i) => v === bits(b)[i]);
      assert.ok(same(out, want), `${dtype} ${T}x${n}x${d}: the SIMD kernel`);
      // Outside an arena: the plain loop, the same sums for its part (its own order; compared with the float32 loop).
      const loose = new Float32Array(T * d), looseWant = new Float32Array(T * d);
      matmul(loose, x.slice(), { dtype, data: half.data.slice() }, T, n, d);
      matmul(looseWant, x.slice(), wide.slice(), T, n, d);
      assert.ok(same(loose, looseWant), `${dtype} ${T}x${n}x${d}: the plain loop`);
    }
  }
});

Deno.test("matmul() widens every finite 16-bit weight exactly (each read alone through a one-hot input)", () => {
  for (const dtype of ["bf16", "f16"] as const) {
    // Row j's first weight is the bit pattern j; x = (1, 0, ..., 0) reads it out as out[j].
    const n = 8, d = 65536;
    const arena = new Arena(d * n * 2 + d * 4 + 1024);
    const half = { dtype, data: arena.u16(d * n) }, x = arena.f32(n), out = arena.f32(d);
    for (let j = 0; j < d; j++) half.data[j * n] = j;
    x[0] = 1;
    matmul(out, x, half, 1, n, d);
    const want = decodeToF32(new Uint8Array(Uint16Array.from({ length: d }, (_, j) => j).buffer), dtype);
    const mask = dtype === "f16" ? 0x7c00 : 0x7f80;
    let checked = 0;
    for (let j = 0; j < d; j++) {
      if ((j & mask) === mask) continue; // infinities and NaNs: the loader decodes a matrix holding one to float32
      // 1 * w + 0 * rest: exact, and a zero weight's sign may differ (0 + -0): compared by value.
      assert.ok(out[j] === want[j], `${dtype} 0x${j.toString(16)}: ${out[j]} vs ${want[j]}`);
      checked++;
    }
    assert.equal(checked, dtype === "f16" ? 63488 : 65280);
  }
});

Deno.test("ropeTables() takes angles in float32, as transformers does, to a few ulps at position 4095", async () => {
  // torch's own tables (tests/fixtures/rope_tables.json says how they were made). An angle taken in float64 instead
  // would differ by up to half a float32 ulp of 4095 (1.2e-4), which cos and sin pass on.
  const golden = JSON.parse(await Deno.readTextFile(new URL("../tests/fixtures/rope_tables.json", import.meta.url)));
  const { head_dim, rope_theta } = golden.config;
  const half = head_dim / 2;
  const { cos, sin } = ropeTables(4096, head_dim, rope_theta);
  (golden.positions as number[]).forEach((t, p) => {
    for (let i = 0; i < half; i++) {
      // float32 cos and sin are not all correctly rounded: a few ulps of 1 apart (6e-8 each).
      assert.ok(Math.abs(cos[t * half + i]! - golden.cos[p][i]) <= 3e-7, `cos at ${t}, ${i}`);
      assert.ok(Math.abs(sin[t * half + i]! - golden.sin[p][i]) <= 3e-7, `sin at ${t}, ${i}`);
    }
  });
});

Deno.test("rmsnorm() adds epsilon to the mean square under the root, as HF's LlamaRMSNorm does", () => {
  // Row 0: x = (3, 4) * 1e-3, mean square 12.5e-6; with eps 12.5e-6 the root is exactly 5e-3: out = w * (0.6, 0.8).
  // Row 1: (6, 8), where eps hardly counts: root of 50 + 12.5e-6.
  const x = new Float32Array([3e-3, 4e-3, 6, 8]), w = new Float32Array([1, 2]), out = new Float32Array(4);
  rmsnorm(out, x, w, 2, 2, 12.5e-6);
  const r = Math.sqrt(50 + 12.5e-6);
  const want = [0.6, 1.6, 6 / r, 16 / r];
  want.forEach((v, i) => assert.ok(Math.abs(out[i]! - v) <= 2e-7 * Math.abs(v), `${i}: ${out[i]} vs ${v}`));
  // Epsilon 0 leaves x / rms(x): (3, 4) / sqrt(12.5) = (0.8485.., 1.1313..) whatever the scale of x.
  rmsnorm(out, new Float32Array([3e-3, 4e-3]), new Float32Array([1, 1]), 1, 2, 0);
  assert.ok(Math.abs(out[0]! - 3 / Math.sqrt(12.5)) < 1e-6 && Math.abs(out[1]! - 4 / Math.sqrt(12.5)) < 1e-6);
});

/** Scratch for `attention` over T tokens of heads of headDim. */
function scratch(T: number, headDim: number): AttentionScratch {
  const f = (n: number) => new Float32Array(n);
  return { qh: f(T * headDim), kh: f(T * headDim), vt: f(headDim * T), att: f(T * T), ho: f(T * headDim) };
}

Deno.test("attention() is causal softmax(q k / sqrt(headDim)) v, exact for scores far past exp's range", () => {
  // One head of 2 dimensions, two tokens; scale 1 / sqrt(2). Token 0 sees only itself: its output is v0.
  const v = new Float32Array([1, 10, 100, 1000]); // v0 = (1, 10), v1 = (100, 1000)
  const run = (q: number[], k: number[]) => {
    const out = new Float32Array(4);
    attention(out, new Float32Array(q), new Float32Array(k), v, 2, 1, 1, 2, scratch(2, 2));
    return Array.from(out);
  };
  // Token 1's scores: q1 . k0 / sqrt(2) = ln 3 and q1 . k1 = 0, so probabilities 3/4 and 1/4.
  const l3 = Math.SQRT2 * Math.log(3);
  const mixed = run([0, 0, l3, 0], [1, 0, 0, 0]);
  const want = [1, 10, 0.75 * 1 + 0.25 * 100, 0.75 * 10 + 0.25 * 1000];
  mixed.forEach((o, i) => assert.ok(Math.abs(o - want[i]!) <= 1e-5 * want[i]!, `${i}: ${o} vs ${want[i]}`));
  // A score of 40 * 40 / sqrt(2) = 1131 overflows exp unless the row's largest score, the diagonal's included, is
  // subtracted first: the answer is then all weight on that score's value, exactly.
  assert.deepEqual(run([40, 0, 40, 0], [40, 0, 0, 0]), [1, 10, 1, 10], "the largest score off the diagonal");
  assert.deepEqual(run([40, 0, 40, 0], [0, 0, 40, 0]), [1, 10, 100, 1000], "the largest score on the diagonal");
  // A future token never counts: token 0's output is v0 whatever k1 and v1 hold.
  assert.deepEqual(run([1, 0, 0, 0], [0, 0, 50, 0]).slice(0, 2), [1, 10]);
});

Deno.test("swiglu() is silu(x) * y with silu(g) = g / (1 + e^-g); accum() adds; sumSquares() sums squares", () => {
  // silu(1) = 0.7310585786, silu(-2) = -0.2384058440, silu(0) = 0, by hand from e = 2.718281828.
  const x = new Float32Array([1, -2, 0, 1]), y = new Float32Array([1, 1, 5, -3]);
  swiglu(x, y, 3); // the fourth is past len: untouched
  const want = [0.7310585786, -0.238405844, 0, 1];
  want.forEach((v, i) => assert.ok(Math.abs(x[i]! - v) < 1e-7, `${i}: ${x[i]} vs ${v}`));
  const a = new Float32Array([1, 2, 3]);
  accum(a, new Float32Array([10, 20, 30]), 2);
  assert.deepEqual(Array.from(a), [11, 22, 3]);
  const acc = new Float64Array([1, 0]);
  sumSquares(acc, new Float32Array([1, -2, 3, -4]), 2, 2); // columns (1, 3) and (-2, -4)
  assert.deepEqual(Array.from(acc), [1 + 1 + 9, 4 + 16]);
});

Deno.test("rope() pairs dimension i with i + headDim / 2 and rotates each pair by its angle", () => {
  // headDim 4, one token, two heads; angles 90 degrees for pair 0 and 180 for pair 1: (a, b) -> (-b, a), (-a, -b).
  const cos = new Float32Array([0, -1]), sin = new Float32Array([1, 0]);
  const x = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]);
  rope(x, 1, 2, 4, cos, sin);
  // Head 0: pairs (x0, x2) = (1, 3) -> (-3, 1) and (x1, x3) = (2, 4) -> (-2, -4).
  assert.deepEqual(Array.from(x), [-3, -2, 1, -4, -7, -6, 5, -8]);
  // Against a small angle, the rotation keeps each pair's length.
  const t = ropeTables(3, 4, 10000);
  const y = new Float32Array([0.3, -0.7, 1.1, 0.2, 0.5, 0.5, -0.5, 0.25, 1, 2, 3, 4]);
  const before = y.slice();
  rope(y, 3, 1, 4, t.cos, t.sin);
  for (let p = 0; p < 3; p++) {
    for (const i of [0, 1]) {
      const o = p * 4;
      const len = (a: Float32Array) => Math.hypot(a[o + i]!, a[o + i + 2]!);
      assert.ok(Math.abs(len(y) - len(before)) < 1e-6, `token ${p} pair ${i}`);
    }
  }
  assert.deepEqual(Array.from(y.subarray(0, 4)), Array.from(before.subarray(0, 4)), "position 0 is not rotated");
});

Deno.test("Arena hands out zeroed 16-byte aligned arrays, to the last byte of its pages and no further", () => {
  const arena = new Arena(65536);
  const sizes = [3, 1, 5, 7];
  for (const n of sizes) {
    const a = arena.f32(n), b = arena.u16(n);
    assert.equal(a.byteOffset % 16, 0);
    assert.equal(b.byteOffset % 16, 0);
    assert.ok(a.every((v) => v === 0) && b.every((v) => v === 0));
  }
  // f32 of 3, 1, 5 and 7: 12, 4, 20 and 28 bytes, rounded up to 16, 16, 32 and 32; u16: 6, 2, 10 and 14 bytes, 16
  // each. 160 bytes used so far.
  arena.f32((65536 - 160) / 4); // exactly the rest
  assert.throws(() => arena.f32(1), /arena exhausted/);
  assert.throws(() => new Arena(ARENA_MAX_BYTES + 1), /exceeds WebAssembly's 4 GiB/);
});

Deno.test("matmul() in an arena with rows not a multiple of 4 takes the plain loop, agreeing with float64", () => {
  for (const [T, n, d] of [[4, 5, 4], [3, 6, 8], [2, 7, 5]] as const) {
    const arena = new Arena(1 << 16);
    const x = arena.f32(T * n), w = arena.f32(d * n), out = arena.f32(T * d);
    x.forEach((_, i) => (x[i] = Math.sin(i + 1)));
    w.forEach((_, i) => (w[i] = Math.cos(2 * i + 1)));
    matmul(out, x, w, T, n, d);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < d; j++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += x[t * n + i]! * w[j * n + i]!;
        assert.ok(Math.abs(out[t * d + j]! - s) < 1e-5, `${T}x${n}x${d} (${t}, ${j}): ${out[t * d + j]} vs ${s}`);
      }
    }
  }
});

Deno.test("addBias() adds bias[j] to column j of every row, and nothing without a bias", () => {
  const out = Float32Array.from([1, 2, 3, 4, 5, 6]); // 2 rows of 3
  addBias(out, Float32Array.from([0.5, -1, 10]), 2);
  assert.deepEqual([...out], [1.5, 1, 13, 4.5, 4, 16]);
  addBias(out, undefined, 2);
  assert.deepEqual([...out], [1.5, 1, 13, 4.5, 4, 16]);
});
