/**
 * The WebGPU backend against the contract's golden answers and against the CPU backend (the oracle) on random
 * layers: every method, pattern and dtype, odd shapes, exact ties, zero rows and columns, and a layer larger than
 * a storage binding so that tiling runs. Runs on lavapipe in CI; skipped only where no WebGPU adapter exists.
 */
import assert from "node:assert/strict";
import { copyLayer } from "./_layers.ts";
import { unpack } from "msgpackr";
import { DEFAULT_EXPONENT, type DType, parsePattern, parsePruneRequest } from "../contract/api.ts";
import { ZpruneError } from "../contract/errors.ts";
import type { Backend, LayerJob, LayerOutput, PruneParams } from "../prune/backend.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../gpu/webgpu_backend.ts";
import { planTiles, ROW_SELECT_MAX_COLS } from "../gpu/layer_plan.ts";
import { normal, randomLayer, rng } from "./_random.ts";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";
import type { PruneResponse } from "../contract/api.ts";
import { postPrune, startServer } from "./_server.ts";
import { bandDifferences, maskBit as bit } from "./_band.ts";
import { encode } from "../contract/dtype_codec.ts";
import { MAGNITUDE_HALF } from "./_params.ts";

const GOLDEN = new URL("./fixtures/golden/", import.meta.url);

/**
 * The last test checks that close() gets each worker's word that it destroyed its device: on CI's two loaded cores
 * (this file also runs beside the Python suite) that may take longer than a server's 2 s.
 */
const CLOSE_WAIT_MS = 30_000;
/** Opened once; null only where no adapter exists at all (then every test here is skipped). */
const gpu: WebGpuBackend | null = await createWebGpuBackend({ allowFallback: true, closeWaitMs: CLOSE_WAIT_MS });
/** The same device with 64 KiB tiles, so that small layers take the multi-tile path. */
const tiled: WebGpuBackend | null = gpu &&
  await createWebGpuBackend({ allowFallback: true, maxTileBytes: 64 * 1024, closeWaitMs: CLOSE_WAIT_MS });
const cpu: Backend = createCpuBackend({ threads: 0 });
/** The same device acting as one whose storage bindings hold 1 MiB, to meet the per-array limits quickly anywhere. */
const SMALL_BINDING = 1 << 20;
const small: WebGpuBackend | null = gpu &&
  await createWebGpuBackend({ allowFallback: true, maxBindingBytes: SMALL_BINDING, closeWaitMs: CLOSE_WAIT_MS });
const ignore = !gpu;

// The backends hold a worker each; close them when the module's tests are done.
globalThis.addEventListener("unload", () => {
  gpu?.close();
  tiled?.close();
  small?.close();
});

/** Turns a golden request into backend parameters and its single layer, as the route would. */
function fromRequest(bytes: Uint8Array): { params: PruneParams; layer: LayerJob } {
  const req = parsePruneRequest(unpack(bytes));
  const l = req.layers[0]!;
  const [rows, cols] = l.weight.shape as [number, number];
  const act = l.actNormSq ? new Float32Array(l.actNormSq.data.slice().buffer) : null;
  return {
    params: {
      method: req.method,
      pattern: parsePattern(req.pattern, req.sparsity),
      exponent: req.options?.exponent ?? DEFAULT_EXPONENT[req.method],
      returnWeight: req.return.includes("weight"),
      returnScore: req.return.includes("score"),
    },
    layer: { name: l.name, rows, cols, dtype: l.weight.dtype, weight: l.weight.data.slice(), actNormSq: act },
  };
}

for (const entry of [...Deno.readDirSync(GOLDEN)].filter((e) => e.name.endsWith(".request.msgpack"))) {
  const name = entry.name.replace(".request.msgpack", "");
  Deno.test({
    name: `webgpu: golden ${name} has the expected mask`,
    ignore,
    async fn() {
      const { params, layer } = fromRequest(Deno.readFileSync(new URL(entry.name, GOLDEN)));
      const exp = unpack(Deno.readFileSync(new URL(`${name}.expected.msgpack`, GOLDEN)));
      for (const backend of [gpu!, tiled!]) {
        const out = await backend.prune(params, copyLayer(layer));
        assert.equal(out.stats.pruned, exp.pruned);
        assert.equal(out.stats.total, exp.total);
        let diff = 0;
        for (let i = 0; i < exp.total; i++) {
          if (!bit(exp.ambiguous, i) && bit(out.mask, i) !== bit(exp.mask, i)) diff++;
        }
        assert.equal(diff, 0, `${diff} unambiguous mask bits differ`);
        if (exp.alpha !== undefined) {
          assert.ok(Math.abs(out.stats.alpha! - exp.alpha) < 1e-6, `alpha ${out.stats.alpha}`);
        }
      }
    },
  });
}

/** One random case for the CPU comparison. */
interface Case {
  rows: number;
  cols: number;
  dtype: DType;
  params: PruneParams;
  /** How the weights are drawn. */
  kind: "normal" | "ties" | "zeros" | "constant";
  acts: boolean;
  seed: number;
  /**
   * The exact CPU path may answer instead of the GPU: Z-Pruner at a low sparsity on layer or row, where the
   * threshold may fall within the f32 z-scores' error (zSafeThreshold in gpu/f32_safety.ts, tested on its own there).
   */
  exactOk?: boolean;
}

/** A random layer for a case. */
function makeLayer(c: Case): LayerJob {
  const rand = rng(c.seed);
  const n = c.rows * c.cols;
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (c.kind === "ties") v[i] = (Math.floor(rand() * 7) - 3) * 0.25; // few distinct values: many exact ties
    else if (c.kind === "constant") v[i] = 0.5;
    else v[i] = normal(rand) * 0.02;
  }
  if (c.kind === "zeros") {
    // A zero row and a zero column (and, for tall enough shapes, a second of each).
    const zr = [Math.floor(c.rows / 2), c.rows - 1], zc = [0, Math.floor(c.cols / 3)];
    for (const r of zr) v.fill(0, r * c.cols, (r + 1) * c.cols);
    for (const j of zc) for (let r = 0; r < c.rows; r++) v[r * c.cols + j] = 0;
  }
  let act: Float32Array | null = null;
  if (c.acts) {
    act = new Float32Array(c.cols);
    for (let j = 0; j < c.cols; j++) act[j] = c.kind === "ties" ? 1 + (j % 3) : -Math.log(rand() || 1e-9) * 2;
  }
  return {
    name: `case-${c.seed}`,
    rows: c.rows,
    cols: c.cols,
    dtype: c.dtype,
    weight: encode(v, c.dtype),
    actNormSq: act,
  };
}

/** Compares a GPU answer with the CPU's; returns a description of the first difference, or null. */
function compare(c: Case, layer: LayerJob, got: LayerOutput, ref: LayerOutput): string | null {
  const n = c.rows * c.cols;
  if (got.stats.pruned !== ref.stats.pruned) return `pruned ${got.stats.pruned} vs ${ref.stats.pruned}`;
  if (got.mask.length !== ref.mask.length) return `mask length ${got.mask.length} vs ${ref.mask.length}`;
  // Scores that both backends compute exactly (|W| of representable values) must give identical masks, which
  // checks the tie-break by index bit for bit; otherwise only outside the ambiguity band.
  const exact = c.params.method === "magnitude" || (c.params.method === "wanda" && !c.acts);
  const p = c.params.pattern;
  const unit = p.kind === "layer" ? n : p.kind === "row" ? c.cols : p.m;
  const d = bandDifferences(got.mask, ref.mask, ref.score!, unit);
  let i = d.firstOutside;
  if (exact) { for (i = 0; i < n && bit(got.mask, i) === bit(ref.mask, i); i++); }
  if (i >= 0 && i < n) {
    return `mask differs at ${i} (row ${Math.floor(i / c.cols)}): gpu ${bit(got.mask, i)} cpu ${bit(ref.mask, i)}, ` +
      `cpu score ${ref.score![i]} gpu score ${got.score![i]} threshold ${ref.stats.threshold}`;
  }
  // Scores agree to float32 accuracy (relative to the largest score, since z-scores near 0 cancel).
  let max = 0;
  // (Scores that overflowed float32 are infinite on both backends; they must be equal, and stay out of `max`.)
  for (let i = 0; i < n; i++) if (Number.isFinite(ref.score![i]!)) max = Math.max(max, Math.abs(ref.score![i]!));
  for (let i = 0; i < n; i++) {
    const a = got.score![i]!, b = ref.score![i]!;
    if (!(a === b || Math.abs(a - b) <= 1e-4 * Math.abs(b) + 1e-5 * max)) return `score ${i}: gpu ${a} cpu ${b}`;
  }
  // Pruned weights: the request's bytes with exactly the GPU's pruned entries zeroed.
  const size = c.dtype === "f32" ? 4 : 2;
  const w = got.weight!;
  if (w.length !== n * size) return `weight length ${w.length}`;
  for (let i = 0; i < n; i++) {
    for (let b = 0; b < size; b++) {
      const want = bit(got.mask, i) ? 0 : layer.weight[i * size + b]!;
      if (w[i * size + b] !== want) return `weight byte ${i * size + b}: ${w[i * size + b]} vs ${want}`;
    }
  }
  if (c.params.pattern.kind === "layer" && ref.stats.threshold !== undefined) {
    const t = got.stats.threshold!;
    if (!(t === ref.stats.threshold || Math.abs(t - ref.stats.threshold) <= 1e-4 * ref.stats.threshold + 1e-6 * max)) {
      return `threshold ${t} vs ${ref.stats.threshold}`;
    }
  }
  if (c.params.method === "zpruner" && Math.abs(got.stats.alpha! - ref.stats.alpha!) > 1e-6) {
    return `alpha ${got.stats.alpha} vs ${ref.stats.alpha}`;
  }
  for (const k of ["min", "max", "mean"] as const) {
    if (Math.abs(got.stats.rowSparsity[k] - ref.stats.rowSparsity[k]) > 1e-12) return `rowSparsity.${k}`;
  }
  return null;
}

/**
 * Runs one case (its random layer, or `layer`) on a GPU backend and the CPU, asserting agreement, and that the GPU
 * (not the exact path) ran it.
 */
async function check(backend: Backend, c: Case, layer = makeLayer(c)): Promise<void> {
  const params = { ...c.params, returnScore: true, returnWeight: true };
  const ref = await cpu.prune(params, copyLayer(layer));
  const exactBefore = backend.exactPathLayers;
  const got = await backend.prune(params, copyLayer(layer));
  const why = compare({ ...c, params }, layer, got, ref);
  assert.equal(why, null, `${JSON.stringify({ ...c, params })}: ${why}`);
  // The exact CPU path gives the oracle's answer too: without this, a layer sent there by mistake would pass.
  if (c.exactOk) assert.ok(backend.exactPathLayers - exactBefore <= 1, `${c.rows}x${c.cols}: one layer, one path`);
  else assert.equal(backend.exactPathLayers, exactBefore, `${c.rows}x${c.cols} ran on the exact CPU path, not the GPU`);
}

const METHODS = ["zpruner", "wanda", "ria", "magnitude"] as const;
const DTYPES: DType[] = ["f32", "f16", "bf16"];

/** Random cases: shapes from 1x1 to ~300x500 (odd sizes), each method, dtype and pattern. */
function randomCases(count: number, seed: number): Case[] {
  const rand = rng(seed);
  const cases: Case[] = [];
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  for (let i = 0; i < count; i++) {
    let kind = pick(["normal", "normal", "ties", "zeros", "constant"] as const);
    const patternKind = pick(["layer", "layer", "row", "nm"] as const);
    let rows = 1 + Math.floor(rand() ** 2 * 300);
    let cols = 1 + Math.floor(rand() ** 2 * 500);
    let pattern: PruneParams["pattern"];
    if (patternKind === "nm") {
      const [n, m] = pick([[2, 4], [4, 8], [1, 8], [3, 8], [1, 2], [2, 3]] as const);
      cols = m * (1 + Math.floor(cols / m));
      pattern = { kind: "nm", n, m };
    } else {
      const sparsity = pick([0, 1e-4, 0.01, 0.5, 0.5, 0.7, 0.99]);
      pattern = { kind: patternKind, sparsity };
    }
    if (i === 0) [rows, cols, pattern] = [1, 1, { kind: "layer", sparsity: 0.99 }];
    const method = pick(METHODS);
    // Z-scores of a constant matrix are 0/0: every backend's answer is rounding noise, so no comparison is possible.
    if (kind === "constant" && method === "zpruner") kind = "ties";
    // Small random layers have means of 0.003-0.02 stds: at 1e-4 and 0.01 their threshold may take the exact path; and
    // the smallest (a few hundred weights, means up to 0.1 stds) may have N:M groups within the error model's reach.
    const lowSparsity = pattern.kind !== "nm" && pattern.sparsity > 0 && pattern.sparsity < 0.05;
    const exactOk = method === "zpruner" && (lowSparsity || (pattern.kind === "nm" && rows * cols < 2048));
    cases.push({
      exactOk,
      rows,
      cols,
      dtype: pick(DTYPES),
      kind,
      acts: rand() < 0.8,
      seed: seed * 1000 + i,
      params: { method, pattern, exponent: DEFAULT_EXPONENT[method], returnWeight: true, returnScore: true },
    });
  }
  return cases;
}

Deno.test({
  name: "webgpu: random layers match the CPU backend (all methods, patterns, dtypes)",
  ignore,
  async fn() {
    for (const c of randomCases(60, 1)) await check(gpu!, c);
  },
});

Deno.test({
  name: "webgpu: activation entries of -0 give the CPU's masks exactly (wanda, exponent 2: (-0)^1 is -0)",
  ignore,
  async fn() {
    const rows = 9, cols = 16;
    const rand = rng(0x2d0);
    const levels = [0.5, -0.5, 0.25, 1, -1];
    const w = new Float32Array(rows * cols).map(() => levels[Math.floor(rand() * levels.length)]!);
    // Exact products (powers of two times small integers), so both backends' scores are equal and masks must be.
    const act = new Float32Array(cols).map((_, j) => [-0, 0, 1, 4][j % 4]!);
    const patterns: PruneParams["pattern"][] = [
      { kind: "layer", sparsity: 0.25 },
      { kind: "row", sparsity: 0.25 },
      { kind: "nm", n: 2, m: 4 },
      { kind: "nm", n: 1, m: 2 },
    ];
    for (const pattern of patterns) {
      const params: PruneParams = { method: "wanda", pattern, exponent: 2, returnWeight: false, returnScore: false };
      const layer: LayerJob = { name: "negzero", rows, cols, dtype: "f32", weight: encode(w, "f32"), actNormSq: act };
      const ref = await cpu.prune(params, copyLayer(layer));
      const got = await gpu!.prune(params, copyLayer(layer));
      assert.deepEqual(got.mask, ref.mask, JSON.stringify(pattern));
      assert.equal(got.stats.pruned, ref.stats.pruned);
    }
  },
});

Deno.test({
  name: "webgpu: Z-Pruner layers whose normalised weights spread too little for f32 take the exact path, as the CPU",
  ignore,
  async fn() {
    const rand = rng(0x5d);
    const zpruner: PruneParams = {
      method: "zpruner",
      pattern: { kind: "layer", sparsity: 0.5 },
      exponent: 1.5,
      returnWeight: true,
      returnScore: true,
    };
    const cases: [string, number, number, DType, (r: number, c: number) => number][] = [
      // Entries equal in exact arithmetic: the std is zero and z = 0 (API.md).
      ["1x10 positive row", 1, 10, "f32", (_r, c) => 0.1 + 0.07 * ((c * 7) % 10)],
      ["10x1 positive column", 10, 1, "f32", (r) => 0.1 + 0.07 * ((r * 7) % 10)],
      ["5x3 constant rows", 5, 3, "f32", (r) => r + 1],
      ["300x200 all -0.25", 300, 200, "f32", () => -0.25],
      // The f32 mean's rounding alone once gave every weight z = +-1 here.
      ["2x28672 all 0.3", 2, 28672, "f32", () => 0.3],
      // A real spread that a fixed bound on std would call zero: all 1 but one weight.
      ["2048x1024 f16 ones but one", 2048, 1024, "f16", (r, c) => (r === 7 && c === 9 ? 1 + 2 ** -10 : 1)],
      // A large mean beside a small spread: f32 cancels too many bits (measured: outside the 1e-5 band).
      ["256x512 f16 1 + N(0, 0.01)", 256, 512, "f16", () => 1 + 0.01 * normal(rand)],
      // Spread enough overall (std/rms 0.1), yet the bulk sits a hundredth of the mean from it: f32 left the band.
      [
        "1024x1024 f16 1% zero rows, rest 1 + N(0, 0.003)",
        1024,
        1024,
        "f16",
        (r) => (r % 100 === 3 ? 0 : 1 + 0.003 * normal(rand)),
      ],
    ];
    for (const [what, rows, cols, dtype, f] of cases) {
      const vals = new Float32Array(rows * cols).map((_, i) => f(Math.floor(i / cols), i % cols));
      const layer: LayerJob = { name: what, rows, cols, dtype, weight: encode(vals, dtype), actNormSq: null };
      const ref = await cpu.prune(zpruner, copyLayer(layer));
      const before = gpu!.exactPathLayers;
      const got = await gpu!.prune(zpruner, copyLayer(layer));
      const c: Case = { rows, cols, dtype, kind: "constant", acts: false, seed: 0, params: zpruner };
      assert.equal(compare(c, layer, got, ref), null, what);
      assert.equal(gpu!.exactPathLayers, before + 1, `${what}: the exact path answered`);
    }
    // All-positive weights (std/rms about 0.6) pass this bound, but their mean, 1.3 stds from zero, may shift f32
    // z-scores by 1.3e-6 (zSafeThreshold's bound, with WGSL's least accurate division and inverseSqrt): z must be 1.27
    // or more for the 1e-5 band, so at 0.5 (z about 0.7) the exact path answers, at 0.95 (z about 1.9) the GPU, and
    // agrees with the CPU. Weights whose mean is 0.3 stds from zero need z of 0.29 or more: at 0.95 the GPU answers.
    const positive = new Float32Array(128 * 256).map(() => Math.abs(0.02 * normal(rand)));
    const absN: LayerJob = {
      name: "|N|",
      rows: 128,
      cols: 256,
      dtype: "f16",
      weight: encode(positive, "f16"),
      actNormSq: null,
    };
    const high: PruneParams = { ...zpruner, pattern: { kind: "layer", sparsity: 0.95 } };
    const c: Case = { rows: 128, cols: 256, dtype: "f16", kind: "normal", acts: false, seed: 0, params: zpruner };
    for (const [params, exact] of [[zpruner, 1], [high, 0]] as const) {
      const ref = await cpu.prune(params, copyLayer(absN));
      const before = gpu!.exactPathLayers;
      const what = `|N| at ${params.pattern.kind === "layer" && params.pattern.sparsity}`;
      assert.equal(compare({ ...c, params }, absN, await gpu!.prune(params, copyLayer(absN)), ref), null, what);
      assert.equal(gpu!.exactPathLayers, before + exact, `${what}: ${exact ? "the exact path" : "the GPU"} answered`);
    }
    const shifted = new Float32Array(128 * 256).map(() => 0.02 * (normal(rand) + 0.3));
    await check(gpu!, { ...c, params: high }, { ...absN, name: "N(0.3, 1)", weight: encode(shifted, "f16") });
    // Zero-mean weights (as trained layers have) stay on the GPU: check() asserts it for the random cases too.
    await check(gpu!, { rows: 64, cols: 96, dtype: "f16", kind: "normal", acts: true, seed: 7, params: zpruner });
  },
});

Deno.test({
  name: "webgpu: Z-Pruner thresholds within f32 z-score error of a mean far from zero take the exact path",
  ignore,
  async fn() {
    // f32 weights 1 + 0.3 N(0, 1): means 3.3 stds from zero, inside Z_SPREAD_MIN, yet at low sparsity the lowest
    // scores are the weights nearest the mean, where f32 rounding of the norms and the mean shifts z by a large part of
    // z itself. Without the threshold rule (zSafeThreshold in gpu/f32_safety.ts) stock lavapipe pruned one weight
    // outside the 1e-5 band in the layer and row patterns here (relative 2.1e-5 layer-wide, 6.8e-5 in its row). 2:4
    // it got right; select_nm's check counts 3 groups whose scores lie within each other's error bounds.
    const rows = 1024, cols = 1024;
    const rand = rng(4);
    const vals = new Float32Array(rows * cols).map(() => 1 + 0.3 * normal(rand));
    const layer: LayerJob = { name: "mean 1", rows, cols, dtype: "f32", weight: encode(vals, "f32"), actNormSq: null };
    const patterns = [
      { kind: "layer", sparsity: 0.003 },
      { kind: "row", sparsity: 0.003 },
      { kind: "nm", n: 2, m: 4 },
    ] as const;
    for (const pattern of patterns) {
      const params: PruneParams = { method: "zpruner", pattern, exponent: 1, returnWeight: true, returnScore: true };
      const ref = await cpu.prune(params, copyLayer(layer));
      const before = gpu!.exactPathLayers;
      const got = await gpu!.prune(params, copyLayer(layer));
      const c: Case = { rows, cols, dtype: "f32", kind: "normal", acts: false, seed: 4, params };
      assert.equal(compare(c, layer, got, ref), null, pattern.kind);
      assert.equal(gpu!.exactPathLayers, before + 1, `${pattern.kind}: the exact path answered`);
    }
    // Zero-mean weights (as trained layers have; here means of 0.002 stds) at low sparsities (0.3-3 %) stay on the GPU
    // and agree with the CPU. Activations spread over 0.01-20 (exponent 1.5) lower the smallest thresholds it may keep.
    const zeroMean = [
      [false, { kind: "layer", sparsity: 0.003 }],
      [false, { kind: "row", sparsity: 0.01 }],
      [true, { kind: "layer", sparsity: 0.01 }],
      [true, { kind: "row", sparsity: 0.03 }],
      [true, { kind: "nm", n: 2, m: 4 }],
    ] as const;
    for (const [acts, pattern] of zeroMean) {
      const params: PruneParams = { method: "zpruner", pattern, exponent: 1.5, returnWeight: true, returnScore: true };
      await check(gpu!, { rows, cols, dtype: "f32", kind: "normal", acts, seed: 8, params });
    }
  },
});

Deno.test({
  name: "webgpu: the row pattern ranks rows of up to 2^21 columns on the GPU, wider rows on the exact path",
  ignore,
  async fn() {
    // Equal weights at sparsity 1 - 2^-20 give select_row's threads their most loop iterations: every mask word is all
    // ties, each taking up to 32 tie-break steps. lavapipe ends a shader's loops after 65,535 iterations in all, and
    // cut this one short past about 3.17M columns (measured at 3.25M: 2,948,848 pruned where 3,249,996 are due).
    const params: PruneParams = {
      method: "magnitude",
      pattern: { kind: "row", sparsity: 1 - 2 ** -20 },
      exponent: 1,
      returnWeight: false,
      returnScore: false,
    };
    for (const [cols, exact] of [[ROW_SELECT_MAX_COLS, 0], [ROW_SELECT_MAX_COLS + 1, 1]] as const) {
      const layer: LayerJob = {
        name: `1x${cols} equal`,
        rows: 1,
        cols,
        dtype: "f32",
        weight: encode(new Float32Array(cols).fill(0.5), "f32"),
        actNormSq: null,
      };
      const ref = await cpu.prune(params, copyLayer(layer));
      const before = gpu!.exactPathLayers;
      const got = await gpu!.prune(params, copyLayer(layer));
      assert.equal(got.stats.pruned, Math.floor((1 - 2 ** -20) * cols), layer.name);
      const differing = got.mask.filter((b, i) => b !== ref.mask[i]).length;
      assert.equal(differing, 0, `${layer.name}: ${differing} mask bytes differ from the CPU's`);
      assert.equal(gpu!.exactPathLayers, before + exact, `${layer.name}: ${exact ? "the exact path" : "the GPU"}`);
    }
  },
});

Deno.test({
  name: "webgpu: multi-tile layers match the CPU backend",
  ignore,
  async fn() {
    for (const c of randomCases(30, 2)) await check(tiled!, c);
  },
});

Deno.test({
  name: "webgpu: layer selection matches the CPU backend on ties",
  ignore,
  async fn() {
    for (const [pattern, method] of [["layer", "magnitude"], ["row", "magnitude"], ["layer", "wanda"]] as const) {
      for (const dtype of DTYPES) {
        for (const backend of [gpu!, tiled!]) {
          await check(backend, {
            rows: 257,
            cols: 131,
            dtype,
            kind: "ties",
            acts: false,
            seed: 7,
            params: {
              method,
              pattern: { kind: pattern, sparsity: 0.37 },
              exponent: 1,
              returnWeight: true,
              returnScore: true,
            },
          });
        }
      }
    }
  },
});

Deno.test({
  name: "webgpu: row selection over rows longer than one 8192-key segment matches the CPU backend on ties",
  ignore,
  async fn() {
    for (const sparsity of [0.3, 0.5, 0.9]) {
      await check(gpu!, {
        rows: 3,
        cols: 20011,
        dtype: "f16",
        kind: "ties",
        acts: false,
        seed: 13,
        params: {
          method: "magnitude",
          pattern: { kind: "row", sparsity },
          exponent: 1,
          returnWeight: true,
          returnScore: true,
        },
      });
    }
  },
});

Deno.test({
  name: "webgpu: N:M selection matches the CPU backend on ties (2:4, 4:8, 1:8)",
  ignore,
  async fn() {
    for (const [n, m] of [[2, 4], [4, 8], [1, 8]] as const) {
      await check(gpu!, {
        rows: 33,
        cols: 8 * 17,
        dtype: "f16",
        kind: "ties",
        acts: false,
        seed: 11,
        params: {
          method: "magnitude",
          pattern: { kind: "nm", n, m },
          exponent: 1,
          returnWeight: true,
          returnScore: true,
        },
      });
    }
  },
});

Deno.test({
  name: "webgpu: a NaN or infinite weight is refused with its first index",
  ignore,
  async fn() {
    for (
      const [dtype, method] of [["f32", "zpruner"], ["f16", "magnitude"], ["bf16", "ria"], ["f16", "wanda"]] as const
    ) {
      const c: Case = {
        rows: 40,
        cols: 50,
        dtype,
        kind: "normal",
        acts: true,
        seed: 3,
        params: {
          method,
          pattern: method === "ria" ? { kind: "row", sparsity: 0.5 } : { kind: "layer", sparsity: 0.5 },
          exponent: 1.5,
          returnWeight: false,
          returnScore: false,
        },
      };
      const layer = makeLayer(c);
      const size = dtype === "f32" ? 4 : 2;
      const setBad = (i: number, nan: boolean) => {
        const bits = dtype === "f32"
          ? (nan ? [0, 0, 0xc0, 0x7f] : [0, 0, 0x80, 0xff])
          : dtype === "f16"
          ? (nan ? [0x00, 0x7e] : [0x00, 0x7c])
          : (nan ? [0xc0, 0x7f] : [0x80, 0xff]);
        layer.weight.set(bits, i * size);
      };
      setBad(1733, false);
      setBad(1234, true);
      await assert.rejects(
        gpu!.prune(c.params, copyLayer(layer)),
        (e: unknown) => e instanceof ZpruneError && e.code === "non_finite" && e.message.includes("weight[1234]"),
      );
      // The backend keeps working after a refused layer.
      const ok = await gpu!.prune(c.params, makeLayer(c));
      assert.equal(ok.stats.pruned, 1000);
    }
  },
});

Deno.test({
  name: "webgpu: a NaN past the first row-tile is refused with its index in the layer, not in its tile",
  ignore,
  async fn() {
    // 40 x 1000 f32 on 64 KiB tiles: 16 rows a tile, so weight[30000] (row 30) is element 14000 of the second tile;
    // decode.wgsl must add the tile's base to the index it reports.
    const rows = 40, cols = 1000, rand = rng(30);
    assert.equal(planTiles(rows, cols, 64 * 1024)[1]!.base, 16000, "the tile plan this test assumes");
    const v = new Float32Array(rows * cols).map(() => normal(rand));
    v[30000] = NaN;
    const layer: LayerJob = { name: "nan-tile", rows, cols, dtype: "f32", weight: encode(v, "f32"), actNormSq: null };
    const params = MAGNITUDE_HALF;
    for (const [what, backend] of [["64 KiB tiles", tiled!], ["one tile", gpu!], ["cpu", cpu]] as const) {
      await assert.rejects(backend.prune(params, copyLayer(layer)), (e: unknown) => {
        assert.ok(e instanceof ZpruneError && e.code === "non_finite", `${what}: ${e}`);
        assert.match(e.message, /weight\[30000\] \(row 30, column 0\) is NaN or infinite/, what);
        return true;
      });
    }
  },
});

Deno.test({
  name: "webgpu: concurrent calls each get their own layer's answer",
  ignore,
  async fn() {
    const cases = randomCases(12, 5);
    const layers = cases.map(makeLayer);
    const outs = await Promise.all(cases.map((c, i) => gpu!.prune(c.params, copyLayer(layers[i]!))));
    for (let i = 0; i < cases.length; i++) {
      const ref = await gpu!.prune(cases[i]!.params, copyLayer(layers[i]!));
      assert.deepEqual(outs[i]!.mask, ref.mask);
      assert.equal(outs[i]!.stats.total, cases[i]!.rows * cases[i]!.cols);
    }
  },
});

/** Z-Pruner, layer-wide at 0.5, every output: the large-shape cases below. */
const ZPRUNER_LAYER: PruneParams = {
  method: "zpruner",
  pattern: { kind: "layer", sparsity: 0.5 },
  exponent: DEFAULT_EXPONENT.zpruner,
  returnWeight: true,
  returnScore: true,
};

Deno.test({
  name: "webgpu: a layer larger than one storage binding (6144x6144 f32) is tiled and matches the CPU",
  ignore,
  async fn() {
    await check(gpu!, {
      rows: 6144,
      cols: 6144,
      dtype: "f32",
      kind: "normal",
      acts: true,
      seed: 99,
      params: ZPRUNER_LAYER,
    });
  },
});

Deno.test({
  name: "webgpu: a row wider than 65535 workgroups of 64 columns (1 x 4194273) matches the CPU",
  ignore,
  async fn() {
    // Past 65535 groups of 64 columns one dispatch dimension is full, and the kernels flatten over x and y. Wanda on
    // the GPU; Z-Pruner takes the exact path at this width, as its f32 row sums may be off by 278 roundings (the
    // column kernels' striding is tested on its own: gpu/kernels/col_stats_test.ts). One row keeps the oracle quick.
    const c = { rows: 1, cols: 65535 * 64 + 33, dtype: "f16" as const, kind: "normal" as const, acts: true, seed: 5 };
    await check(gpu!, { ...c, params: { ...ZPRUNER_LAYER, method: "wanda", exponent: 1 } });
    const before = gpu!.exactPathLayers;
    await check(gpu!, { ...c, params: ZPRUNER_LAYER, exactOk: true });
    assert.equal(gpu!.exactPathLayers, before + 1, "Z-Pruner on the exact path");
  },
});

Deno.test({
  name: "webgpu: more rows than one dispatch dimension holds (65,600 x 16) match the CPU",
  ignore,
  async fn() {
    // Kernels with a workgroup per row (row_stats, select_row) pass 65535 workgroups here. lavapipe fits such a layer
    // in one binding only when rows are short; on the H200 a 2 GiB binding holds 131,072 rows of 4096 f32 columns.
    // (N:M runs a thread per group, already past 65535 workgroups in gpu/kernels/select_nm_test.ts; Wanda here, as
    // Z-Pruner's group check may send a layer this size to the exact path.)
    const c = { rows: 65_600, cols: 16, dtype: "f16" as const, kind: "normal" as const, acts: true, seed: 8 };
    const rowPattern = { kind: "row", sparsity: 0.5 } as const;
    await check(gpu!, { ...c, params: ZPRUNER_LAYER });
    await check(gpu!, { ...c, params: { ...ZPRUNER_LAYER, pattern: rowPattern } });
    await check(gpu!, { ...c, params: { ...ZPRUNER_LAYER, method: "ria", exponent: 0.5 } });
    const nm = { kind: "nm", n: 2, m: 4 } as const;
    await check(gpu!, { ...c, params: { ...ZPRUNER_LAYER, method: "wanda", exponent: 1, pattern: nm } });
  },
});

Deno.test({
  name: "webgpu: activations outside float32's range (exponent 64) give the CPU's masks and scores",
  ignore,
  async fn() {
    // act = actNormSq^32. Large: small weights times act beyond 3.4e38, most products in range; a layer where some
    // overflow is refused as non_finite by both backends alike (the GPU flags it and hands it to the exact path).
    // Small: large f32 weights times act below float32's normal range, products normal.
    // Tiny: normal f32 weights just above float32's smallest normal (|w| / 2 would be subnormal) times act ~ 2^100.
    const tiny = (rand: () => number) => (rand() < 0.5 ? -1 : 1) * (1.2e-38 + rand() * 1.1e-38);
    // (Only wanda scores |w| itself; the statistics of such weights underflow f32 sums of squares: docs/GPU.md.)
    const all = ["wanda", "ria", "zpruner"] as const;
    const settings = [
      { dtype: "f16" as const, draw: (rand: () => number) => normal(rand) * 1e-4, lo: 17, hi: 20, methods: all },
      { dtype: "f32" as const, draw: (rand: () => number) => normal(rand) * 1e4, lo: 0.06, hi: 0.065, methods: all },
      { dtype: "f32" as const, draw: tiny, lo: 8.6, hi: 8.9, methods: ["wanda"] as const },
    ];
    let compared = 0, refused = 0;
    for (const { dtype, draw, lo, hi, methods } of settings) {
      for (const method of methods) {
        for (const pattern of [{ kind: "layer", sparsity: 0.5 }, { kind: "row", sparsity: 0.3 }] as const) {
          const rand = rng(77);
          const rows = 24, cols = 40;
          const v = new Float32Array(rows * cols).map(() => draw(rand));
          const act = new Float32Array(cols).map(() => lo + rand() * (hi - lo));
          const layer: LayerJob = { name: "extreme", rows, cols, dtype, weight: encode(v, dtype), actNormSq: act };
          const c: Case = {
            rows,
            cols,
            dtype,
            kind: "normal",
            acts: true,
            seed: 77,
            params: { method, pattern, exponent: 64, returnWeight: true, returnScore: true },
          };
          const what = `${dtype} ${method} ${pattern.kind}`;
          const ref = await cpu.prune(c.params, copyLayer(layer)).catch((e: unknown) => e as Error);
          const got = await gpu!.prune(c.params, copyLayer(layer)).catch((e: unknown) => e as Error);
          if (ref instanceof Error) {
            assert.ok(ref instanceof ZpruneError && ref.code === "non_finite", `${what}: ${ref}`);
            assert.match(ref.message, /overflows float32/, what);
            assert.ok(got instanceof ZpruneError, `${what}: the GPU answered where the CPU refused`);
            assert.deepEqual([got.code, got.message], [ref.code, ref.message], what);
            refused++;
            continue;
          }
          assert.ok(!(got instanceof Error), `${what}: ${got}`);
          const why = compare(c, layer, got, ref);
          assert.equal(why, null, `${what}: ${why}`);
          compared++;
        }
      }
    }
    // Both outcomes occur: the settings reach past float32 and stay within it.
    assert.ok(compared >= 10 && refused >= 1, `${compared} compared, ${refused} refused`);
  },
});

Deno.test({
  name: "webgpu: an activation past float64's range refuses the layer as the CPU does, tiny weights included",
  ignore,
  async fn() {
    // actNormSq 1e10 at exponent 64 is 1e320 for column 3: infinity even in f64, sent as m = infinity, e = 0. Its
    // weights are all about 1e-35, below the 1e-30 at which score.wgsl scales a score up by 2^64 (k falls to -63):
    // every score of the column is infinite all the same, and both backends refuse the layer.
    const rows = 6, cols = 8, rand = rng(5);
    const v = new Float32Array(rows * cols).map((_, i) => normal(rand) * (i % cols === 3 ? 1e-35 : 1));
    const act = new Float32Array(cols).fill(1);
    act[3] = 1e10;
    const layer: LayerJob = { name: "inf-act", rows, cols, dtype: "f32", weight: encode(v, "f32"), actNormSq: act };
    for (const pattern of [{ kind: "layer", sparsity: 0.5 }, { kind: "row", sparsity: 0.5 }] as const) {
      const params: PruneParams = { method: "wanda", pattern, exponent: 64, returnWeight: false, returnScore: true };
      const ref = await cpu.prune(params, copyLayer(layer)).catch((e: unknown) => e as Error);
      const got = await gpu!.prune(params, copyLayer(layer)).catch((e: unknown) => e as Error);
      assert.ok(ref instanceof ZpruneError && ref.code === "non_finite", `${pattern.kind}: ${ref}`);
      assert.match(ref.message, /weight\[3\] \(row 0, column 3\) overflows float32/);
      assert.ok(got instanceof ZpruneError, `${pattern.kind}: the GPU answered where the CPU refused`);
      assert.deepEqual([got.code, got.message], [ref.code, ref.message]);
    }
  },
});

Deno.test({
  name: "webgpu: a Wanda score that float32 rounds to infinity only in exact arithmetic is refused, as by the CPU",
  ignore,
  async fn() {
    // Exponent 4: act = actNormSq² exactly in f64, here (11863287 · 2^40)² = 2^127 (1 + 5.37 · 2^-23), beside the
    // weight 2 - 11 · 2^-23. Their product, 2^128 (1 - 1.55e-8), lies past 2^128 - 2^103 (halfway above the largest
    // float32), so the CPU's f64 score rounds to infinity and it refuses the layer. score.wgsl rounds twice: act's
    // mantissa to f32 (1 + 5 · 2^-23, down), then the product, down to the largest float32, finite. Only its flag
    // from 2^127, not 2^128, sends the layer to the exact path, which refuses it.
    const rows = 4, cols = 8, rand = rng(33);
    const v = new Float32Array(rows * cols).map(() => 0.5 * normal(rand));
    v[cols + 3] = 2 - 11 * 2 ** -23;
    const act = new Float32Array(cols).fill(1);
    act[3] = 11863287 * 2 ** 40;
    // The construction, in f64: the exact score rounds to infinity in f32, the GPU's two roundings stay finite.
    const w = v[cols + 3]!, a = act[3]! ** 2, f = Math.fround;
    assert.equal(f(w * a), Infinity);
    assert.ok(f(f((w / 2) * f(a / 2 ** 127)) * 2 ** 128) < Infinity);
    const layer: LayerJob = { name: "edge", rows, cols, dtype: "f32", weight: encode(v, "f32"), actNormSq: act };
    for (const pattern of [{ kind: "layer", sparsity: 0.5 }, { kind: "row", sparsity: 0.5 }] as const) {
      const params: PruneParams = { method: "wanda", pattern, exponent: 4, returnWeight: false, returnScore: false };
      const ref = await cpu.prune(params, copyLayer(layer)).catch((e: unknown) => e as Error);
      const got = await gpu!.prune(params, copyLayer(layer)).catch((e: unknown) => e as Error);
      assert.ok(ref instanceof ZpruneError && ref.code === "non_finite", `${pattern.kind}: ${ref}`);
      assert.match(ref.message, /weight\[11\] \(row 1, column 3\) overflows float32/);
      assert.ok(got instanceof ZpruneError, `${pattern.kind}: the GPU answered where the CPU refused`);
      assert.deepEqual([got.code, got.message], [ref.code, ref.message]);
    }
  },
});

Deno.test({
  name: "webgpu: an N:M group whose f32 z-scores swap two weights outside the band takes the exact path",
  ignore,
  async fn() {
    // tests/fixtures/adversarial/README.md: two weights of a 1:4 group with |z| of about 1e-5, exact scores 9e-4
    // apart, that the GPU's f32 scores put in the other order. select_nm's check counts the group as unsafe.
    const { params, layer } = fromRequest(
      Deno.readFileSync(new URL("./fixtures/adversarial/zpruner-1of4-swap.request.msgpack", import.meta.url)),
    );
    const all = { ...params, returnScore: true, returnWeight: true };
    const ref = await cpu.prune(all, copyLayer(layer));
    const before = gpu!.exactPathLayers;
    const got = await gpu!.prune(all, copyLayer(layer));
    const c: Case = { rows: layer.rows, cols: layer.cols, dtype: "f32", kind: "normal", acts: false, seed: 0, params };
    assert.equal(compare({ ...c, params: all }, layer, got, ref), null);
    assert.ok(!bit(got.mask, 2 * 64 + 9) && bit(got.mask, 2 * 64 + 8), "row 2: column 8 pruned, not 9");
    assert.equal(gpu!.exactPathLayers, before + 1, "the exact path answered");
  },
});

Deno.test({
  name: "webgpu: data-free N:M layers with exact zero weights stay on the GPU (zeros are not compared with zeros)",
  ignore,
  async fn() {
    // Zero weights share one score per column on each backend (|mean| / std on both axes), so groups where zeros
    // straddle the N boundary cannot swap; without the exemption select_nm's bounds overlapped and every such layer
    // took the exact path. 20% zeros at random, and a pre-pruned 2:4 layer pruned again at 1:4.
    const rows = 128, cols = 256;
    const rand = rng(0x2e70);
    const sparse = new Float32Array(rows * cols).map(() => (rand() < 0.2 ? 0 : normal(rand) * 0.02));
    const prepruned = new Float32Array(rows * cols).map((_, i) => (i % 4 < 2 ? 0 : normal(rand) * 0.02));
    for (const [w, n, m] of [[sparse, 2, 4], [sparse, 1, 4], [sparse, 4, 8], [prepruned, 1, 4]] as const) {
      const layer: LayerJob = { name: "zeros", rows, cols, dtype: "f16", weight: encode(w, "f16"), actNormSq: null };
      await check(gpu!, {
        rows,
        cols,
        dtype: "f16",
        kind: "zeros",
        acts: false,
        seed: 0,
        params: {
          method: "zpruner",
          pattern: { kind: "nm", n, m },
          exponent: 1.5,
          returnWeight: true,
          returnScore: true,
        },
      }, layer);
    }
  },
});

Deno.test({
  name: "webgpu: many weights at 0.1 mean|W| give the CPU's alpha and mask (the host counts them exactly)",
  ignore,
  async fn() {
    // A layer of one magnitude t within an ulp of 0.1 mean|W| and a few large weights: the f32 bound may count all or
    // none of them as small, moving alpha by up to 0.2 (an audit saw 0.498 become 0.700 and 22 of 128 bits differ).
    const rows = 8, cols = 16, n = rows * cols;
    const rand = rng(0xa1fa);
    const sign = Array.from({ length: n }, () => (rand() < 0.5 ? -1 : 1));
    const act = new Float32Array(cols).map((_, j) => 0.5 + (1.5 * j) / (cols - 1));
    for (const [m, big, ulps] of [[5, 1.3, -1], [3, 1.1, 0], [7, 9.1, 1], [11, 5.9, 0], [7, 4, 0]] as const) {
      // t = 0.1 mean|W| exactly when m weights are `big` and the rest t.
      let t = Math.fround((0.1 * m * big) / n / (1 - (0.1 * (n - m)) / n));
      const bits = new Uint32Array(new Float32Array([t]).buffer);
      bits[0]! += ulps;
      t = new Float32Array(bits.buffer)[0]!;
      const w = new Float32Array(n).map((_, i) => (i % Math.floor(n / m) === 0 && i / Math.floor(n / m) < m ? big : t));
      w.forEach((v, i) => (w[i] = v * sign[i]!));
      const layer: LayerJob = {
        name: "at the bound",
        rows,
        cols,
        dtype: "f32",
        weight: encode(w, "f32"),
        actNormSq: act,
      };
      const params: PruneParams = {
        method: "zpruner",
        pattern: { kind: "layer", sparsity: 0.5 },
        exponent: 1.5,
        returnWeight: true,
        returnScore: true,
      };
      const ref = await cpu.prune(params, copyLayer(layer));
      const got = await gpu!.prune(params, copyLayer(layer));
      assert.equal(got.stats.alpha, ref.stats.alpha, `m ${m}: alpha`);
      const c: Case = { rows, cols, dtype: "f32", kind: "normal", acts: true, seed: m, params };
      assert.equal(compare(c, layer, got, ref), null, `m ${m}, t ${ulps} ulp`);
    }
  },
});

Deno.test({
  name: "webgpu: float64 activation sums below float32's range (from tiny inputs) give the CPU's masks and scores",
  ignore,
  async fn() {
    // The server keeps the sums of squares of `inputs` in float64 (prune/prepare.ts): 1e-44 to 1e-42 would be zero or
    // subnormal in float32, while act_j = sum^(exponent/2) at the default exponents is in range.
    for (const method of ["wanda", "ria", "zpruner"] as const) {
      for (const pattern of [{ kind: "layer", sparsity: 0.5 }, { kind: "row", sparsity: 0.3 }] as const) {
        const rand = rng(78);
        const rows = 24, cols = 40;
        const v = new Float32Array(rows * cols).map(() => normal(rand) * 0.02);
        const act = new Float64Array(cols).map(() => 1e-44 * (1 + 99 * rand()));
        const layer: LayerJob = {
          name: "tiny-act",
          rows,
          cols,
          dtype: "f32",
          weight: encode(v, "f32"),
          actNormSq: act,
        };
        const exponent = DEFAULT_EXPONENT[method];
        const c: Case = {
          rows,
          cols,
          dtype: "f32",
          kind: "normal",
          acts: true,
          seed: 78,
          params: { method, pattern, exponent, returnWeight: true, returnScore: true },
        };
        const ref = await cpu.prune(c.params, copyLayer(layer));
        assert.ok(ref.score!.some((x) => x > 0), "the CPU's scores are not all zero");
        const got = await gpu!.prune(c.params, copyLayer(layer));
        const why = compare(c, layer, got, ref);
        assert.equal(why, null, `${method} ${pattern.kind}: ${why}`);
      }
    }
  },
});

Deno.test({
  name:
    "webgpu: only the arrays a method uses must fit one binding; a layer that does not is answered exactly on the CPU",
  ignore,
  async fn() {
    // 12 bytes of column statistics per column: past (binding limit) / 12 columns Z-Pruner and RIA cannot run on a
    // device, while magnitude (no statistics) still can. A 1 MiB limit keeps the row short (87,382 columns). The
    // contract accepts the layer, so the Z-Pruner request is answered too: on the exact CPU path, counted.
    const cols = Math.floor(SMALL_BINDING / 12) + 1;
    const c: Case = {
      rows: 1,
      cols,
      dtype: "f16",
      kind: "normal",
      acts: false,
      seed: 21,
      params: MAGNITUDE_HALF,
    };
    const layer = makeLayer(c);
    const before = small!.exactPathLayers;
    const ref = await cpu.prune(c.params, copyLayer(layer));
    const got = await small!.prune(c.params, copyLayer(layer));
    assert.equal(got.stats.pruned, ref.stats.pruned);
    assert.deepEqual(got.mask, ref.mask);
    assert.equal(small!.exactPathLayers, before, "magnitude fits the device and runs on it");
    const zp: PruneParams = { ...c.params, method: "zpruner", exponent: 1.5, returnWeight: true, returnScore: true };
    const zpRef = await cpu.prune(zp, copyLayer(layer));
    const zpGot = await small!.prune(zp, copyLayer(layer));
    const why = compare({ ...c, params: zp }, layer, zpGot, zpRef);
    assert.equal(why, null, `zpruner over the binding limit: ${why}`);
    assert.equal(small!.exactPathLayers, before + 1, "Z-Pruner took the exact CPU path");
  },
});

Deno.test({
  name: "webgpu: N:M with large M (both sides of a thread per group) matches the CPU backend, ties and all",
  ignore,
  async fn() {
    // M = 63 and 64 fill select_nm's workgroup words (256 groups, 70 rows of 8 groups span several workgroups);
    // larger M goes through select_row, where Z-Pruner's groups are checked on the host as rows are (zSafeThreshold
    // against each group's threshold: the lowest of M scores is small, so the exact path may answer). M = 65 has as
    // many rows: a full workgroup of its groups would overflow select_nm's words (with NM_THREAD_MAX_M at 65, lavapipe
    // pruned 589 weights of 560 groups at 1:65), which 5 rows (40 groups) do not reach.
    for (const [n, m] of [[7, 63], [32, 64], [1, 65], [50, 100], [999, 1000], [3, 125]] as const) {
      for (const kind of ["ties", "normal"] as const) {
        const cols = m * 8;
        for (const backend of [gpu!, tiled!]) {
          await check(backend, {
            exactOk: kind === "normal" && m > 64,
            rows: m <= 65 ? 70 : 5,
            cols,
            dtype: "f16",
            kind,
            acts: kind === "normal",
            seed: n * 7 + m,
            params: {
              method: kind === "ties" ? "magnitude" : "zpruner",
              pattern: { kind: "nm", n, m },
              exponent: kind === "ties" ? 1 : 1.5,
              returnWeight: true,
              returnScore: true,
            },
          });
        }
      }
    }
  },
});

Deno.test({
  name: "webgpu: radix selection on keys that share their upper digits, or only differ there, matches the CPU",
  ignore,
  async fn() {
    // Magnitude on f32 weights scores |w| exactly, so the keys are the weights' bits: craft them to put every key
    // in one bin of the first 11-bit digit, all but the last 10 bits equal (dense exact ties across key blocks and
    // tiles), or spread over the whole exponent range. 97x300 spans four blocks of 8192 keys and, at 64 KiB, two
    // tiles.
    const rows = 97, cols = 300;
    const rand = rng(99);
    const shapes: [string, () => number][] = [
      ["same first digit", () => 0x3c000000 | Math.floor(rand() * 0x200000)],
      ["same first 22 bits", () => 0x3c000000 | Math.floor(rand() * 0x400)],
      ["whole range", () => 0x00800000 + Math.floor(rand() * 0x7e000000)],
    ];
    for (const [what, draw] of shapes) {
      const bits = new Uint32Array(rows * cols).map(() => (draw() | (rand() < 0.5 ? 0x80000000 : 0)) >>> 0);
      const layer: LayerJob = {
        name: what,
        rows,
        cols,
        dtype: "f32",
        weight: new Uint8Array(bits.buffer),
        actNormSq: null,
      };
      for (const pattern of ["layer", "row"] as const) {
        for (const sparsity of [0.3, 0.5, 0.77]) {
          const params: PruneParams = {
            method: "magnitude",
            pattern: { kind: pattern, sparsity },
            exponent: 1,
            returnWeight: false,
            returnScore: false,
          };
          const ref = await cpu.prune(params, copyLayer(layer));
          for (const backend of [gpu!, tiled!]) {
            const got = await backend.prune(params, copyLayer(layer));
            assert.deepEqual(got.mask, ref.mask, `${what}, ${pattern} ${sparsity}`);
            assert.deepEqual(got.stats, ref.stats, `${what}, ${pattern} ${sparsity}`);
          }
        }
      }
    }
  },
});

Deno.test({
  name: "webgpu: Z-Pruner layers whose sums cancel keep their zero weights' order (exact path where it is unsettled)",
  ignore,
  async fn() {
    // From a fuzz of the backends: weights of ±2^24 and ±1 whose f32 sums in the kernels' order reach exactly 0 where
    // exact ones do not (B + 1 rounds to B), or the reverse. A zero weight's score is s0 · act_j with s0 from the
    // means alone: 0 on one backend (ties by index) and tiny but not 0 on the other (order by act_j).
    const B = 2 ** 24;
    const layers: [string, number[][], number[]][] = [
      ["GPU sums 0, exact not", [[B, -B, 1, 0], [-B, B, 0, 1], [-B, -B, B, B], [B, B, -B, -B]], [1, 1, 0.01, 100]],
      ["exact sums 0, GPU not", [[0, 0, -B, B], [-1, 0, 0, 1], [1, -1, B, -B], [0, 1, 0, -1]], [4, 1, 2, 3]],
    ];
    const patterns: PruneParams["pattern"][] = [
      { kind: "layer", sparsity: 1 / 16 },
      { kind: "layer", sparsity: 5 / 16 },
      { kind: "row", sparsity: 0.25 },
      { kind: "nm", n: 1, m: 2 },
      { kind: "nm", n: 2, m: 4 },
    ];
    for (const [what, rows, act] of layers) {
      for (const dtype of ["f32", "bf16"] as const) {
        const layer: LayerJob = {
          name: what,
          rows: 4,
          cols: 4,
          dtype,
          weight: encode(rows.flat(), dtype),
          actNormSq: new Float32Array(act),
        };
        for (const pattern of patterns) {
          const params: PruneParams = {
            method: "zpruner",
            pattern,
            exponent: 1.5,
            returnWeight: false,
            returnScore: false,
          };
          const ref = await cpu.prune(params, copyLayer(layer));
          const got = await gpu!.prune(params, copyLayer(layer));
          const where = `${what}, ${dtype}, ${JSON.stringify(pattern)}`;
          assert.deepEqual(got.mask, ref.mask, where);
          assert.match(got.exactPath ?? "", /zero/, where);
        }
      }
    }
  },
});

Deno.test({
  name: "webgpu: Z-Pruner zero weights whose scores fall near float32's smallest subnormal take the exact path",
  ignore,
  async fn() {
    // From a review: every zero weight scores s0 · act_j; with act_j tuned so that it lands near 2^-150 the CPU's f64
    // product rounds to 2^-149 or 0 in f32 where the GPU's f32 one may round the other way. The means lie far from 0
    // (zeroWeightsUnsettled does not apply): score.wgsl's underflow flag has to see zero weights too.
    const P = 32, Q = 8, rows = 4, cols = 2 * P + Q, n = rows * cols;
    const rand = rng(1);
    const w = new Float32Array(n);
    for (let r = 0; r < rows; r++) for (let j = 2 * P; j < cols; j++) w[r * cols + j] = 0.3 + (rand() - 0.3) * 2;
    const layer = (act: Float64Array): LayerJob => ({
      name: "subnormal zeros",
      rows,
      cols,
      dtype: "f32",
      weight: encode(w, "f32"),
      actNormSq: act,
    });
    const probe = new Float64Array(cols).fill(1);
    for (let j = 1; j < 2 * P; j += 2) probe[j] = 0; // odd zero columns score 0 on both backends
    for (const pattern of [{ kind: "layer", sparsity: (rows * P) / n }, { kind: "nm", n: 1, m: 2 }] as const) {
      const params: PruneParams = { method: "zpruner", pattern, exponent: 2, returnWeight: false, returnScore: true };
      const s0 = (await cpu.prune(params, layer(probe.slice()))).score![0]!; // a zero weight's score at act 1
      const act = probe.slice();
      for (let i = 0; i < P; i++) act[2 * i] = (2 ** -150 / s0) * (1 + (i - P / 2) * 5e-8);
      const ref = await cpu.prune(params, layer(act.slice()));
      const got = await gpu!.prune(params, layer(act.slice()));
      assert.deepEqual(got.mask, ref.mask, pattern.kind);
      assert.match(got.exactPath ?? "", /subnormal/, pattern.kind);
    }
  },
});

Deno.test({
  name: "webgpu: a Z-Pruner column whose f32 sums overflow, in rows that do not, takes the exact path, as the CPU",
  ignore,
  async fn() {
    // 1024 x 8 f32, column 0 of 1e18 (1 + u): its sum of squares (about 1e39) overflows f32 while each row's (about
    // 1e36) does not, so only the column sums show it (the other overflow cases scale a row). Without that check
    // lavapipe answered on the GPU, 506 of 8192 mask bits from the CPU's.
    const rows = 1024, cols = 8, rand = rng(31);
    const v = new Float32Array(rows * cols).map((_, i) => (i % cols === 0 ? 1e18 * (1 + 0.01 * rand()) : normal(rand)));
    const layer: LayerJob = { name: "big column", rows, cols, dtype: "f32", weight: encode(v, "f32"), actNormSq: null };
    const params: PruneParams = {
      method: "zpruner",
      pattern: { kind: "layer", sparsity: 0.5 },
      exponent: 1.5,
      returnWeight: false,
      returnScore: false,
    };
    const ref = await cpu.prune(params, copyLayer(layer));
    const got = await gpu!.prune(params, copyLayer(layer));
    assert.match(got.exactPath ?? "(answered on the GPU)", /^column 0's sums overflow float32/);
    assert.deepEqual(got.mask, ref.mask);
  },
});

Deno.test({
  name: "webgpu: Z-Pruner N:M groups past select_nm (M > 64) are checked one group at a time, not a row",
  ignore,
  async fn() {
    // 32 x 256 zero-mean f32 at 64:128: actNormSq 1e-18 on columns 0-127 puts every score of group 0 (of each row)
    // about 3e-14 times the others, below the lowest threshold f32 z-scores resolve within the band (zSafeThreshold),
    // while group 1's thresholds lie far above it. Checked a row at a time, each row's scan would stop at group 1's
    // first pruned score and pass (lavapipe's masks then agreed with the CPU's: the path is what this test pins).
    const rows = 32, cols = 256, rand = rng(32);
    const v = new Float32Array(rows * cols).map(() => normal(rand));
    const act = new Float32Array(cols).map((_, j) => (j < 128 ? 1e-18 : 1));
    const layer: LayerJob = { name: "tiny group", rows, cols, dtype: "f32", weight: encode(v, "f32"), actNormSq: act };
    const params: PruneParams = {
      method: "zpruner",
      pattern: { kind: "nm", n: 64, m: 128 },
      exponent: 1.5,
      returnWeight: true,
      returnScore: true,
    };
    const ref = await cpu.prune(params, copyLayer(layer));
    const got = await gpu!.prune(params, copyLayer(layer));
    assert.match(
      got.exactPath ?? "(answered on the GPU)",
      /^group 0's threshold score \S+ is below \S+, where float32/,
    );
    const c: Case = { rows, cols, dtype: "f32", kind: "normal", acts: true, seed: 32, params };
    assert.equal(compare(c, layer, got, ref), null);
  },
});

Deno.test({
  name: "webgpu: Z-Pruner z-scores below 2^-41 whose cubes vanish take the exact path (score.wgsl's tiny flag)",
  ignore,
  async fn() {
    // Rows and columns that cancel (means 0) with weights of 1e-20 and 2e-20 beside ±1: their z-scores, about 1e-20
    // on both axes (below 2^-41), cube through float32's subnormals, which a GPU may flush where the CPU's f64 keeps
    // them, so score.wgsl flags the layer. Here the cubes vanish on both backends (the CPU stores its scores as f32),
    // and lavapipe keeps subnormals anyway: the GPU's mask would match, so the path is what this test pins.
    const t = 2e-20, u = 1e-20;
    const w = [[t, -t, 1, -1], [-t, t, -1, 1], [1, -1, u, -u], [-1, 1, -u, u]];
    const layer: LayerJob = {
      name: "tiny z",
      rows: 4,
      cols: 4,
      dtype: "f32",
      weight: encode(w.flat(), "f32"),
      actNormSq: null,
    };
    const params: PruneParams = {
      method: "zpruner",
      pattern: { kind: "layer", sparsity: 1 / 16 },
      exponent: 1.5,
      returnWeight: false,
      returnScore: false,
    };
    const ref = await cpu.prune(params, copyLayer(layer));
    const got = await gpu!.prune(params, copyLayer(layer));
    assert.equal(got.exactPath, "a subnormal weight or score, or a score past float32's range");
    assert.deepEqual(got.mask, ref.mask);
  },
});

Deno.test({
  name: "webgpu: a request of many layers over HTTP, computed in groups, answers each layer as the CPU backend",
  ignore,
  async fn() {
    // Forty small layers of several shapes and dtypes (the route groups them: prune/run_layers.ts), then one past the
    // group budget's slack and two more small ones: groups, a layer alone, and a group again.
    const rand = rng(2026);
    const dtypes: DType[] = ["f32", "f16", "bf16"];
    const shapes = [...Array.from({ length: 40 }, (_, i) => [1 + (i % 9), 8 * (1 + (i % 5))]), [320, 512], [3, 8], [
      5,
      16,
    ]];
    const layers = shapes.map(([rows, cols], i) => {
      const dtype = dtypes[i % 3]!;
      const { weight, actNormSq } = randomLayer(rand, { rows: rows!, cols: cols!, dtype, ties: i % 7 === 3 });
      return { name: `l${i}`, rows: rows!, cols: cols!, dtype, weight, actNormSq };
    });
    const server = await startServer({ backend: gpu! });
    try {
      for (
        const [method, pattern, sparsity] of [["zpruner", "layer", 0.5], ["wanda", "row", 0.25], ["ria", "2:4", null]]
      ) {
        const body = {
          method,
          pattern,
          ...(sparsity === null ? {} : { sparsity }),
          return: ["mask", "weight"],
          layers: layers.map((l) => ({
            name: l.name,
            weight: { dtype: l.dtype, shape: [l.rows, l.cols], data: l.weight },
            actNormSq: { dtype: "f32", shape: [l.cols], data: new Uint8Array(l.actNormSq.buffer) },
          })),
        };
        const res = await postPrune(server.url, encodeMsgpack(body));
        assert.equal(res.status, 200, await res.clone().text());
        const got = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
        assert.equal(got.backend, "webgpu");
        const params: PruneParams = {
          method: method as PruneParams["method"],
          pattern: parsePattern(pattern as string, sparsity as number | null),
          exponent: DEFAULT_EXPONENT[method as PruneParams["method"]],
          returnWeight: true,
          returnScore: false,
        };
        for (const [i, l] of layers.entries()) {
          const ref = await cpu.prune(params, copyLayer(l));
          const out = got.layers[i]!;
          assert.equal(out.name, l.name);
          assert.deepEqual(out.mask, ref.mask, `${method} ${l.name}`);
          assert.deepEqual(out.weight!.data, ref.weight, `${method} ${l.name}: pruned weights`);
        }
      }
    } finally {
      await server.close();
    }
  },
});

// Last in the module: the backends are closed here, awaited, so that each worker destroys its device before the
// runtime exits (the unload handler above cannot wait, and covers only runs that filter this test out).
Deno.test({
  name: "webgpu: close() after the runs above has each worker confirm it destroyed its device",
  ignore,
  async fn() {
    for (const [what, backend] of [["default", gpu!], ["64 KiB tiles", tiled!], ["1 MiB bindings", small!]] as const) {
      await backend.close();
      assert.ok(backend.deviceReleased, `${what}: the worker did not confirm within ${CLOSE_WAIT_MS} ms`);
    }
  },
});
