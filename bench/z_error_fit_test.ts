/**
 * bench/z_error_fit.ts's comparison on scores made on the host with a known error, no adapter needed: each constant's
 * fit finds the size of an error of its own form, and the relative term's fit the size of a relative one.
 */
import assert from "node:assert/strict";
import { EPS32, Z_SHIFT } from "../gpu/f32_safety.ts";
import { rng } from "../tests/_random.ts";
import { type Case, compare, reference, weights } from "./z_error_fit.ts";

/** The case's weights and the float64 z-scores' pieces. */
function layer(c: Case) {
  const w = weights(c);
  return { w, ...reference(w, c.rows, c.cols) };
}

/** Scores from z-scores each moved by dR (rows) and dC (columns), as f32: a shift of the model's form. */
function shifted(zr: Float64Array, zc: Float64Array, alpha: number, dR: number, dC: number): Float32Array {
  return Float32Array.from(
    zr,
    (r, i) => alpha * Math.abs(r + dR) ** 3 + (1 - alpha) * Math.abs(zc[i]! + dC) ** 3,
  );
}

Deno.test("z_error_fit: a relative error of ±20 ULPs at random fits the relative term at 20", () => {
  const c: Case = { kind: "zero", rows: 96, cols: 160, seed: 3, sigma: 0.02 };
  const { w, zr, zc, alpha } = layer(c);
  const rand = rng(5);
  const gpu = shifted(zr, zc, alpha, 0, 0).map((s) => s * (1 + (rand() < 0.5 ? -20 : 20) * EPS32));
  const out = compare(w, c.rows, c.cols, c.kind, gpu);
  // Two roundings to f32 (the score, the product) add up to EPS32 each; the shift term takes a little off the weights
  // nearest z = 0.
  assert.ok(out.fit.rel as number > 19.5 && (out.fit.rel as number) <= 22, `rel fit ${out.fit.rel}`);
  assert.ok(Math.abs(out.common) < 3, `common factor ${out.common}`);
  assert.ok(out.cover < 1, `cover ${out.cover}`);
});

Deno.test("z_error_fit: z-scores shifted by 8 EPS32 |mean| / std fit the shift term at 8, either way", () => {
  const c: Case = { kind: "shift", rows: 256, cols: 384, seed: 2, sigma: 0.5 };
  const { w, zr, zc, alpha, mR, mC } = layer(c);
  for (const dir of [1, -1]) {
    const gpu = shifted(zr, zc, alpha, dir * 8 * EPS32 * mR, dir * 8 * EPS32 * mC);
    const out = compare(w, c.rows, c.cols, c.kind, gpu);
    // The relative term covers some of it, more the larger z; the floor adds 0.5 / sqrt(n), 2e-3 of m here.
    assert.ok((out.fit.shift as number) > 7.5 && (out.fit.shift as number) <= 8, `${dir}: shift fit ${out.fit.shift}`);
    assert.ok(Math.abs(out.cover - 8 / Z_SHIFT) < 0.05, `${dir}: cover ${out.cover}, not about 8 / ${Z_SHIFT}`);
  }
});

Deno.test("z_error_fit: zero-mean z-scores shifted by 40 EPS32 / √n fit the floor at 40 / Z_SHIFT - m √n", () => {
  const c: Case = { kind: "zero", rows: 128, cols: 256, seed: 1, sigma: 0.02 };
  const { w, zr, zc, alpha, mR, mC } = layer(c);
  const n = c.rows * c.cols, d = 40 * EPS32 / Math.sqrt(n);
  const out = compare(w, c.rows, c.cols, c.kind, shifted(zr, zc, alpha, d, d));
  // Z_SHIFT (m + floor / sqrt(n)) must reach 40 / sqrt(n) on the axis whose mean is nearer zero.
  const want = 40 / Z_SHIFT - Math.min(mR, mC) * Math.sqrt(n);
  assert.ok(want > 1, `the case should need a floor (${want})`);
  const got = out.fit.floor as number;
  assert.ok(got <= want + 1e-9 && got > 0.9 * want, `floor fit ${got}, want about ${want}`);
});
