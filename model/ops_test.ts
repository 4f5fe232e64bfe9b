import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";
import { Arena, matmul, ropeInvFreq, ropeTables, widenRow } from "./ops.ts";
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
