/**
 * How far this adapter's Z-Pruner scores sit from float64, in the terms of gpu/f32_safety.ts's error model: the
 * measurement behind Z_SHIFT, Z_REL and Z_MEAN_FLOOR, run on whatever GPU the engine finds (lavapipe here; a real GPU
 * in bench/device_run.sh), with the model's constants as they are.
 *
 *   deno run -A bench/z_error_fit.ts [--quick] [--fallback]
 *
 * Layers: f32 1 + σN(0, 1) (σ 0.3, 0.5, 1: means 3.3, 2 and 1 stds from zero, where the shift term binds) and zero-mean
 * 0.02·N(0, 1) (as trained layers are, where the relative term and the floor bind). Per layer, one JSON line:
 * - `cover`: max over weights of r / B⁺ where r = Δ - c·s >= 0, and -r / B⁻ where it is negative; B⁺ = α((zr + dR)³ -
 *   zr³) + (1 - α)((zc + dC)³ - zc³) + Z_REL·s and B⁻ = α(zr³ - max(zr - dR, 0)³) + (1 - α)(...) + Z_REL·s (the
 *   bounds select_nm.wgsl checks), dR = Z_SHIFT·2⁻²⁴·(|meanR|/stdR + Z_MEAN_FLOOR/√n) (dC likewise), Δ the GPU's
 *   score less the f64 one, c the factor common to the whole layer that fits best (it cannot change an order). Above
 *   1: a weight outside the model.
 * - `relMid` (zero-mean layers): half the spread of Δ/s, in 2⁻²⁴, over the weights the shift term cannot reach.
 * - `fit`: each constant's least value that keeps every weight inside with the other two as they are (and c the best
 *   for it): `shift` (Z_SHIFT), `rel` (Z_REL, in 2⁻²⁴) and, for zero-mean layers, `floor` (Z_MEAN_FLOOR). A constant
 *   over its fit is the room it has left; the fits do not add up, as each takes the others' room.
 * The last line sums up the worst of each. The f64 scores are computed here, independently of the CPU backend.
 */
import { GpuEngine } from "../gpu/engine.ts";
import { EPS32, Z_MEAN_FLOOR, Z_REL, Z_SHIFT } from "../gpu/f32_safety.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { normal, rng } from "../tests/_random.ts";

export interface Case {
  kind: "shift" | "zero";
  rows: number;
  cols: number;
  seed: number;
  sigma: number;
}

/** The layers: the fit's own set, or a few small ones with --quick. */
function cases(quick: boolean): Case[] {
  const out: Case[] = [];
  const shift = quick ? [[512, 1024]] : [[2048, 4096], [16384, 1024]];
  const zero = quick ? [[64, 96], [1024, 1024]] : [[64, 96], [256, 384], [1024, 1024], [4096, 1024], [16384, 1024]];
  for (const [rows, cols] of shift) {
    for (const seed of quick ? [1] : [1, 2]) {
      for (const sigma of [0.3, 0.5, 1]) out.push({ kind: "shift", rows: rows!, cols: cols!, seed, sigma });
    }
  }
  for (const [rows, cols] of zero) {
    for (const seed of quick ? [1, 2] : [1, 2, 3]) {
      out.push({ kind: "zero", rows: rows!, cols: cols!, seed, sigma: 0.02 });
    }
  }
  return out;
}

/** The case's f32 weights, from the tests' seeded generator. */
export function weights(c: Case): Float32Array {
  const rand = rng(c.seed * 7919 + c.rows * 31 + c.cols);
  const offset = c.kind === "shift" ? 1 : 0;
  return new Float32Array(c.rows * c.cols).map(() => offset + c.sigma * normal(rand));
}

/** API.md's z-scores in float64 (exported for the fit's test): |zr|, |zc|, alpha, and |mean| / std per axis. */
export function reference(w: Float32Array, rows: number, cols: number) {
  const n = rows * cols;
  const rowSq = new Float64Array(rows), colSq = new Float64Array(cols);
  let absSum = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = w[r * cols + c]!;
      rowSq[r] = rowSq[r]! + v * v;
      colSq[c] = colSq[c]! + v * v;
      absSum += Math.abs(v);
    }
  }
  const inv = (x: Float64Array) => x.map((s) => (s > 0 ? 1 / Math.sqrt(s) : 0));
  const ir = inv(rowSq), ic = inv(colSq);
  const wr = (i: number) => w[i]! * ir[Math.floor(i / cols)]!;
  const wc = (i: number) => w[i]! * ic[i % cols]!;
  let sR = 0, sC = 0, small = 0;
  const bound = 0.1 * (absSum / n);
  for (let i = 0; i < n; i++) {
    sR += wr(i);
    sC += wc(i);
    if (Math.abs(w[i]!) < bound) small++;
  }
  const meanR = sR / n, meanC = sC / n;
  let qR = 0, qC = 0;
  for (let i = 0; i < n; i++) {
    qR += (wr(i) - meanR) ** 2;
    qC += (wc(i) - meanC) ** 2;
  }
  const stdR = Math.sqrt(qR / (n - 1)), stdC = Math.sqrt(qC / (n - 1));
  const zr = new Float64Array(n), zc = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    zr[i] = Math.abs((wr(i) - meanR) / stdR);
    zc[i] = Math.abs((wc(i) - meanC) / stdC);
  }
  return { zr, zc, alpha: 0.7 * (1 - 0.3 * (small / n)), mR: Math.abs(meanR) / stdR, mC: Math.abs(meanC) / stdC };
}

/**
 * How far the common factor may go, for the cover and the fits alike: far past any rounding's (tens of 2⁻²⁴), and
 * nowhere near 1 + c <= 0, which would flatten or reverse the scores' order.
 */
const WINDOW = 200 * EPS32;

/**
 * The least over c of max_i of (d_i - c·s_i) / up_i where that is >= 0, else (c·s_i - d_i) / lo_i: each term is convex
 * in c (the larger of two linear functions), and so is their max. Ternary search over the window.
 */
function bestCover(d: Float64Array, s: Float64Array, up: Float64Array, lo: Float64Array): { cover: number; c: number } {
  const at = (c: number) => {
    let m = 0;
    for (let i = 0; i < d.length; i++) {
      const r = d[i]! - c * s[i]!;
      const b = r >= 0 ? up[i]! : lo[i]!;
      if (b > 0) m = Math.max(m, Math.abs(r) / b);
      else if (r !== 0) m = Infinity; // a score of 0 (z = 0 on both axes) must come out 0
    }
    return m;
  };
  let a = -WINDOW, b = WINDOW;
  for (let it = 0; it < 60; it++) {
    const m1 = a + (b - a) / 3, m2 = b - (b - a) / 3;
    if (at(m1) <= at(m2)) b = m2;
    else a = m1;
  }
  const c = (a + b) / 2;
  return { cover: at(c), c };
}

/**
 * The least v >= 0 for which `inside(v)` holds, given that it holds for every larger v, to 1e-4 of itself; Infinity
 * past 1024.
 */
function least(inside: (v: number) => boolean): number {
  if (inside(0)) return 0;
  let a = 0, b = 1;
  for (; !inside(b); b *= 2) {
    if (b >= 1024) return Infinity;
    a = b;
  }
  while (b - a > 1e-4 * b) {
    const m = (a + b) / 2;
    if (inside(m)) b = m;
    else a = m;
  }
  return b;
}

/** One layer through the engine, against float64. */
async function measure(engine: GpuEngine, c: Case) {
  const { rows, cols } = c;
  const w = weights(c);
  const params: PruneParams = {
    method: "zpruner",
    pattern: { kind: "layer", sparsity: 0 },
    exponent: 1.5,
    returnWeight: false,
    returnScore: true,
  };
  const layer: LayerJob = {
    name: "fit",
    rows,
    cols,
    dtype: "f32",
    weight: new Uint8Array(w.slice().buffer),
    actNormSq: null,
  };
  const { output } = await engine.prune(params, layer);
  return { ...c, ...compare(reference(w, rows, cols), c.kind, output.score!) };
}

/** float64 z-scores' pieces, as `reference` gives them. */
export type Reference = ReturnType<typeof reference>;

/** A layer's f32 scores (from a GPU) against float64: cover, the common factor, relMid and each constant's fit. */
export function compare(ref: Reference, kind: Case["kind"], gpu: Float32Array) {
  const { zr, zc, alpha, mR, mC } = ref;
  const n = zr.length;
  /** The model's shift of z per axis, for a shift constant and a floor. */
  const shifts = (shift: number, floor: number) =>
    [mR, mC].map((m) => shift * EPS32 * (m + floor / Math.sqrt(n))) as [number, number];
  /** Weight i's room above (dir 1) or below (-1) its f64 score, beyond the relative term. */
  const room = (i: number, dir: number, [dR, dC]: [number, number]) => {
    const r = zr[i]!, q = zc[i]!;
    return dir > 0
      ? alpha * ((r + dR) ** 3 - r ** 3) + (1 - alpha) * ((q + dC) ** 3 - q ** 3)
      : alpha * (r ** 3 - Math.max(r - dR, 0) ** 3) + (1 - alpha) * (q ** 3 - Math.max(q - dC, 0) ** 3);
  };
  const model = shifts(Z_SHIFT, Z_MEAN_FLOOR);
  const s = new Float64Array(n), d = new Float64Array(n), up = new Float64Array(n), lo = new Float64Array(n);
  let relLo = Infinity, relHi = -Infinity; // Δ/s over the weights the shift term cannot reach
  for (let i = 0; i < n; i++) {
    const r = zr[i]!, q = zc[i]!;
    s[i] = alpha * r ** 3 + (1 - alpha) * q ** 3;
    d[i] = gpu[i]! - s[i]!;
    up[i] = room(i, 1, model) + Z_REL * s[i]!;
    lo[i] = room(i, -1, model) + Z_REL * s[i]!;
    if (s[i]! > 0 && up[i]! - Z_REL * s[i]! < EPS32 * s[i]!) {
      relLo = Math.min(relLo, d[i]! / s[i]!);
      relHi = Math.max(relHi, d[i]! / s[i]!);
    }
  }
  const { cover, c: common } = bestCover(d, s, up, lo);
  // Each constant's least value with the other two as they are, for the best common factor at that value: the room
  // each one has left. Weight i allows the factor an interval, (d - up) / s <= c <= (d + lo) / s, so a value fits when
  // the intervals meet within the window. The relative term widens every interval, not the window, by rel on each
  // side: closed form. The shift and floor: bisection.
  const span = (shift: [number, number], rel: number): [number, number] => {
    let from = -Infinity, to = Infinity;
    for (let i = 0; i < n; i++) {
      const above = room(i, 1, shift) + rel * s[i]!, below = room(i, -1, shift) + rel * s[i]!;
      if (s[i]! > 0) {
        from = Math.max(from, (d[i]! - above) / s[i]!);
        to = Math.min(to, (d[i]! + below) / s[i]!);
      } else if (d[i]! > above || -d[i]! > below) return [Infinity, -Infinity]; // no factor moves a zero score
    }
    return [from, to];
  };
  const meets = ([from, to]: [number, number]) => from <= to && from <= WINDOW && to >= -WINDOW;
  const [from, to] = span(model, 0);
  const rel = Math.max(0, (from - to) / 2, from - WINDOW, -WINDOW - to); // NaN from a NaN score
  const shift = least((k) => meets(span(shifts(k, Z_MEAN_FLOOR), Z_REL)));
  const floor = kind === "zero" ? least((f) => meets(span(shifts(Z_SHIFT, f), Z_REL))) : 0;
  // JSON has neither: a constant that would have to pass 1024 (or a nonzero error on a zero score) reads "Infinity".
  const fixed = (v: number, digits: number) => (Number.isFinite(v) ? +v.toFixed(digits) : String(v));
  return {
    mR: +mR.toPrecision(3),
    mC: +mC.toPrecision(3),
    cover: +cover.toFixed(3),
    common: +(common / EPS32).toFixed(1),
    relMid: kind === "zero" && relHi >= relLo ? +((relHi - relLo) / 2 / EPS32).toFixed(1) : null,
    fit: {
      shift: fixed(shift, 2),
      rel: fixed(rel / EPS32, 2),
      ...(kind === "zero" ? { floor: fixed(floor, 4) } : {}),
    },
  };
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const engine = await GpuEngine.create({ allowFallback: Deno.args.includes("--fallback") });
  if (!engine) {
    console.error("z_error_fit: no WebGPU adapter (pass --fallback to accept a software one)");
    Deno.exit(1);
  }
  engine.exactElsewhere = true; // an exact-path layer throws: its scores would be the CPU's, not this GPU's
  let worstCover = 0, worstRel = 0;
  const worstFit = { shift: 0, rel: 0, floor: 0 };
  for (const c of cases(quick)) {
    const line = await measure(engine, c);
    worstCover = Math.max(worstCover, line.cover);
    worstRel = Math.max(worstRel, line.relMid ?? 0);
    for (const [k, v] of Object.entries(line.fit) as [keyof typeof worstFit, number | string][]) {
      worstFit[k] = Math.max(worstFit[k], Number(v)); // "Infinity" and "NaN" back to numbers
    }
    console.log(JSON.stringify(line));
  }
  console.log(JSON.stringify({
    summary: true,
    adapter: engine.description,
    constants: { Z_SHIFT, Z_REL: Z_REL / EPS32, Z_MEAN_FLOOR },
    worstCover,
    worstRelMid: worstRel,
    worstFit: Object.fromEntries(Object.entries(worstFit).map(([k, v]) => [k, Number.isFinite(v) ? v : String(v)])),
  }));
  engine.destroy();
}
