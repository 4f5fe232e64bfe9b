/**
 * bench/z_error_fit.ts's comparison on scores made on the host with errors of known form and size, no adapter needed.
 * Most cases give the z-scores directly: a few weights near z = 0 on one axis, where the shift term alone binds (the
 * relative term, the common factor and the other axis's room take under a thousandth of the error there, the nearness
 * chosen for that), and many at z = 1 with no error. Each constant's fit is then the shift's size over the model's, by
 * hand.
 */
import assert from "node:assert/strict";
import { EPS32, Z_MEAN_FLOOR, Z_REL, Z_SHIFT } from "../gpu/f32_safety.ts";
import { rng } from "../tests/_random.ts";
import { type Case, compare, type Reference, reference, weights } from "./z_error_fit.ts";

const ALPHA = 0.7;

/** z-scores: the weights given as [zr, zc], then z = 1 on both axes up to n; means mR and mC stds from zero. */
function synthetic(n: number, mR: number, mC: number, near: [number, number][]): Reference {
  const zr = new Float64Array(n).fill(1), zc = new Float64Array(n).fill(1);
  near.forEach(([r, c], i) => ((zr[i] = r), (zc[i] = c)));
  return { zr, zc, alpha: ALPHA, mR, mC };
}

/** f32 scores from z-scores each moved by dR (rows) and dC (columns): a shift of the model's form. */
function shifted(ref: Reference, dR: number, dC: number): Float32Array {
  const { zr, zc, alpha } = ref;
  return Float32Array.from(zr, (r, i) => alpha * Math.abs(r + dR) ** 3 + (1 - alpha) * Math.abs(zc[i]! + dC) ** 3);
}

/** Within a thousandth (and a bit) of the value worked out by hand. */
function near(got: number | string | undefined, want: number, what: string) {
  assert.ok(typeof got === "number" && Math.abs(got - want) <= 2e-3 * want + 1e-3, `${what}: ${got}, want ${want}`);
}

Deno.test("z_error_fit: rows' z shifted by 8·2⁻²⁴ mR, columns' by 2·2⁻²⁴ mC, mC = 3 mR: the shift fits at 8", () => {
  const n = 10000, mR = 1, mC = 3, floor = Z_MEAN_FLOOR / Math.sqrt(n);
  // Near zero on the rows' axis, then the columns'; z = 3·2⁻²⁴ on the rows' lies inside its own shift.
  const z = 1e-4, ref = synthetic(n, mR, mC, [[z, 0], [0, z], [3 * EPS32, 0]]);
  for (const dir of [1, -1]) {
    const out = compare(ref, "shift", shifted(ref, dir * 8 * EPS32 * mR, dir * 2 * EPS32 * mC));
    // The model moves z by K·2⁻²⁴·(m + floor): the rows need K = 8 m / (m + floor), the columns 2 m / (m + floor).
    near(out.fit.shift, (8 * mR) / (mR + floor), `${dir}: shift fit`);
    // The cover compares the cubes' differences at the committed constant: the rows' weight near zero binds.
    const d = 8 * EPS32 * mR, D = Z_SHIFT * EPS32 * (mR + floor);
    const cube = (x: number) => dir * (Math.abs(z + dir * x) ** 3 - z ** 3);
    near(out.cover, cube(d) / cube(D), `${dir}: cover`);
    assert.equal(out.fit.floor, undefined);
  }
  // Times 1 + 100·2⁻²⁴: the common factor takes it (a fit that left the factor at 0 would need about 19).
  const up = shifted(ref, 8 * EPS32 * mR, 2 * EPS32 * mC);
  near(compare(ref, "shift", up.map((v) => v * (1 + 100 * EPS32))).fit.shift, (8 * mR) / (mR + floor), "factor");
  // Times 1 - 300·2⁻²⁴: the factor stops at the window's -200·2⁻²⁴, so the weights at z = 1 (error e, in 2⁻²⁴) need
  // -e - 200 - Z_REL below, and z - K·2⁻²⁴(m + floor) makes 3 K (α (mR + floor) + (1 - α)(mC + floor)) of it.
  const low = up.map((v) => v * (1 - 300 * EPS32)), e = (low[n - 1]! / (ALPHA + (1 - ALPHA)) - 1) / EPS32;
  const per = 3 * (ALPHA * (mR + floor) + (1 - ALPHA) * (mC + floor));
  near(compare(ref, "shift", low).fit.shift, (-e - 200 - Z_REL / EPS32) / per, "past the window");
  // Moved down across zero, |3 - 8| > 3: the score rose, and only the room above takes it.
  const across = compare(ref, "shift", shifted(ref, -8 * EPS32 * mR, 0));
  near(across.fit.shift, (8 * mR) / (mR + floor), "down across zero");
});

Deno.test("z_error_fit: a mean at zero, z shifted by 40·2⁻²⁴ / √n: the floor fits at 40 / Z_SHIFT", () => {
  const n = 10000, mC = 0.1;
  // The rows' mean is at zero, so the floor alone makes their room; the columns' shift is the model's own at the
  // committed constant, which needs no floor (a floor that ignored m would need 0.1 √n = 10 there).
  const ref = synthetic(n, 0, mC, [[1e-5, 0], [0, 1e-5]]);
  const out = compare(ref, "zero", shifted(ref, (40 * EPS32) / Math.sqrt(n), Z_SHIFT * EPS32 * mC));
  near(out.fit.floor, 40 / Z_SHIFT, "floor fit");
});

Deno.test("z_error_fit: ±20 ULPs at random on a factor of 1 + 100·2⁻²⁴ fit the relative term at 20", () => {
  const c: Case = { kind: "zero", rows: 96, cols: 160, seed: 3, sigma: 0.02 };
  const ref = reference(weights(c), c.rows, c.cols);
  const rand = rng(5);
  const exact = shifted(ref, 0, 0);
  const out = compare(ref, c.kind, exact.map((s) => s * (1 + (100 + (rand() < 0.5 ? -20 : 20)) * EPS32)));
  // The common factor takes the 100 out. Two roundings to f32 (the score, the product) add up to 2⁻²⁴ each; the
  // shift term takes a little off the weights nearest z = 0.
  assert.ok(out.fit.rel as number > 19.5 && (out.fit.rel as number) <= 22, `rel fit ${out.fit.rel}`);
  assert.ok(Math.abs(out.common - 100) < 3, `common factor ${out.common}`);
  assert.ok(out.cover < 1, `cover ${out.cover}`);
  // A factor of 1 - 300·2⁻²⁴ is past the window (200·2⁻²⁴) the common factor may take: the rest is error.
  const scaled = compare(ref, c.kind, exact.map((s) => s * (1 - 300 * EPS32)));
  assert.ok(scaled.fit.rel as number > 99 && (scaled.fit.rel as number) <= 102, `rel fit ${scaled.fit.rel}`);
  assert.ok(scaled.cover > 1, `cover ${scaled.cover}`);
});

Deno.test("z_error_fit: reference() is API.md's z-scores and alpha, on a matrix worked by hand", () => {
  // W = [[3, 4, 0], [0, 0, 5]]: rows' norms 5 and 5, columns' 3, 4, 5. Row-normalised: 0.6 0.8 0 / 0 0 1, mean 0.4,
  // squares about it 1.04, unbiased std √(1.04 / 5). Column-normalised: 1 1 0 / 0 0 1, mean 0.5, std √(1.5 / 5).
  // Mean |W| is 2, so the small weights (|w| < 0.2) are the three zeros: alpha = 0.7 (1 - 0.3 · 3 / 6).
  const ref = reference(new Float32Array([3, 4, 0, 0, 0, 5]), 2, 3);
  const stdR = Math.sqrt(1.04 / 5), stdC = Math.sqrt(1.5 / 5);
  const close = (got: ArrayLike<number>, want: number[], what: string) =>
    want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) < 1e-12, `${what}[${i}]: ${got[i]}, want ${w}`));
  close(ref.zr, [0.2, 0.4, 0.4, 0.4, 0.4, 0.6].map((d) => d / stdR), "zr");
  close(ref.zc, Array(6).fill(0.5 / stdC), "zc");
  close([ref.alpha, ref.mR, ref.mC], [0.7 * 0.85, 0.4 / stdR, 0.5 / stdC], "alpha, mR, mC");
  // The bound is a tenth of mean |W|: 0.07 is under 0.07675, 0.08 over 0.077.
  assert.equal(reference(new Float32Array([1, 1, 1, 0.07]), 2, 2).alpha, 0.7 * (1 - 0.3 / 4));
  assert.equal(reference(new Float32Array([1, 1, 1, 0.08]), 2, 2).alpha, 0.7);
  assert.equal(reference(new Float32Array([13, 13, 13, 1]), 2, 2).alpha, 0.7, "1 is not under 0.1 · 10: strictly less");
  // A row and a column of zeros normalise to zeros, not NaN (the contract's zero rows).
  const zero = reference(new Float32Array([0, 0, 0, 1]), 2, 2);
  assert.ok([...zero.zr, ...zero.zc].every(Number.isFinite), `${zero.zr} ${zero.zc}`);
});

Deno.test("z_error_fit: the common factor is found, and relMid is half the spread of the relative errors", () => {
  const c: Case = { kind: "zero", rows: 64, cols: 96, seed: 7, sigma: 0.02 };
  const ref = reference(weights(c), c.rows, c.cols);
  const exact = shifted(ref, 0, 0);
  // Times exactly 1 + 100·2⁻²⁴: all of it is the common factor, up to two f32 roundings (score, product) of up to
  // 2⁻²⁴ relative each.
  const common = compare(ref, c.kind, exact.map((s) => s * (1 + 100 * EPS32)));
  assert.ok(Math.abs(common.common - 100) <= 1.5, `common ${common.common}`);
  assert.ok((common.fit.rel as number) <= 2.5, `rel fit ${common.fit.rel}`);
  assert.ok(common.relMid !== null && common.relMid <= 2.5, `relMid ${common.relMid}`);
  // ±20 about 100: relative errors from 80 to 120 (in 2⁻²⁴) where the shift term cannot reach, half their spread 20.
  const rand = rng(11);
  const spread = compare(ref, c.kind, exact.map((s) => s * (1 + (100 + (rand() < 0.5 ? -20 : 20)) * EPS32)));
  assert.ok(spread.relMid !== null && Math.abs(spread.relMid - 20) <= 2.5, `relMid ${spread.relMid}`);
  // Only the zero-mean layers report it.
  assert.equal(compare(ref, "shift", exact).relMid, null);
});
