import assert from "node:assert/strict";
import { copyLayer } from "../tests/_layers.ts";
import { ZpruneError } from "../contract/errors.ts";
import { GpuEngine } from "./engine.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { encode } from "../contract/dtype_codec.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { randomLayer, rng } from "../tests/_random.ts";
import { MAGNITUDE_HALF } from "../tests/_params.ts";
import { injectScopes } from "../tests/_webgpu.ts";

const engine = await GpuEngine.create({ allowFallback: true });
// Release the device before the runtime tears the module down, rather than leave it to the exit path.
globalThis.addEventListener("unload", () => engine?.destroy());

/** Runs `fn` on an engine of its own (for a test that breaks or wraps its device), destroyed afterwards. */
async function withOwnEngine(fn: (own: GpuEngine) => Promise<void>): Promise<void> {
  const own = (await GpuEngine.create({ allowFallback: true }))!;
  try {
    await fn(own);
  } finally {
    own.destroy();
  }
}

Deno.test({
  name: "GpuEngine.prune() profiles every stage it runs, by timestamps or by wall clock",
  ignore: !engine,
  async fn() {
    const v = new Float32Array(37 * 41).map((_, i) => Math.sin(i));
    const layer = {
      name: "p",
      rows: 37,
      cols: 41,
      dtype: "f32" as const,
      weight: new Uint8Array(v.buffer),
      actNormSq: null,
    };
    const params = {
      method: "zpruner" as const,
      pattern: { kind: "layer" as const, sparsity: 0.5 },
      exponent: 1.5,
      returnWeight: true,
      returnScore: false,
    };
    // Every stage, then a method that skips stats, centred and apply: timestamps must cover exactly the stages
    // that ran (a resolve over queries no pass wrote hung the read-back on an NVIDIA GPU).
    const magnitude = { ...params, method: "magnitude" as const, returnWeight: false };
    const cases = [
      [params, ["decode", "stats", "centred", "score", "select", "apply"]],
      [magnitude, ["decode", "score", "select"]],
    ] as const;
    for (const [p, expected] of cases) {
      const plain = await engine!.prune(p, layer);
      assert.equal(plain.stages, undefined);
      for (const profile of [true, "wall"] as const) {
        const { output, stages } = await engine!.prune(p, layer, { profile });
        assert.deepEqual(output.mask, plain.output.mask);
        assert.deepEqual(Object.keys(stages!.ms), expected);
        for (const ms of Object.values(stages!.ms)) assert.ok(ms >= 0 && Number.isFinite(ms));
        if (profile === "wall") assert.equal(stages!.source, "wall");
        // Timestamps also give the span from the first pass's start to the last one's end (what a wall clock
        // around a back-to-back loop counts, as the torch anchor's does): at least any one stage's time.
        if (stages!.source === "timestamp") {
          assert.ok(Number.isFinite(stages!.spanMs), "spanMs with timestamps");
          assert.ok(stages!.spanMs! >= Math.max(...Object.values(stages!.ms)), JSON.stringify(stages));
        } else assert.equal(stages!.spanMs, undefined);
      }
    }
    // Per dispatch (where the adapter has timestamps): a key per stage and kernel, in recording order.
    const { output, stages } = await engine!.prune(params, layer, { profile: "per-dispatch" });
    assert.deepEqual(output.mask, (await engine!.prune(params, layer)).output.mask);
    // Without timestamps it falls back to wall time per stage: a key per stage, as a "wall" profile.
    const timestamps = engine!.device.features.has("timestamp-query");
    assert.equal(stages!.source, timestamps ? "timestamp-per-dispatch" : "wall");
    assert.deepEqual(
      Object.keys(stages!.ms),
      timestamps
        ? [
          "decode.decode",
          "stats.row_stats",
          "stats.col_stats",
          "stats.col_reduce",
          "centred.z_means",
          "centred.centred",
          "centred.z_spread",
          "score.score",
          "select.select_hist",
          "select.select_pick",
          "select.tie_count",
          "select.tie_scan",
          "select.mask_layer",
          "apply.apply",
        ]
        : ["decode", "stats", "centred", "score", "select", "apply"],
    );
    for (const ms of Object.values(stages!.ms)) assert.ok(ms >= 0 && Number.isFinite(ms));
  },
});

Deno.test({
  name: "GpuEngine.prune() answers a row wider than one storage binding on the exact CPU path, as the CPU backend",
  ignore: !engine,
  async fn() {
    const small = await GpuEngine.create({ allowFallback: true, maxTileBytes: 1024 });
    try {
      const weight = encode(Float32Array.from({ length: 600 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7))), "f16");
      const layer = { name: "wide", rows: 2, cols: 300, dtype: "f16" as const, weight, actNormSq: null };
      const params = {
        method: "magnitude" as const,
        pattern: { kind: "row" as const, sparsity: 0.5 },
        exponent: 1,
        returnWeight: true,
        returnScore: false,
      };
      const reasons: string[] = [];
      small!.onExactPath = (name, why) => reasons.push(`${name}: ${why}`);
      const got = (await small!.prune(params, { ...layer, weight: weight.slice() })).output;
      const want = await pruneLayer(params, { ...layer, weight: weight.slice() });
      assert.deepEqual(got.mask, want.mask);
      assert.deepEqual(got.weight, want.weight);
      assert.equal(got.stats.pruned, 300);
      assert.equal(small!.exactFallbacks, 1);
      assert.deepEqual(reasons, ["wide: a row of 300 columns, over the device's 1024-byte tiles"]);
      // A NaN there is refused as on the GPU path, and not counted or logged as answered.
      const bad = weight.slice();
      bad.set(encode(new Float32Array([NaN]), "f16"), 2 * 450);
      await assert.rejects(
        small!.prune(params, { ...layer, weight: bad }),
        (e: unknown) => e instanceof ZpruneError && e.code === "non_finite" && /450/.test(e.message),
      );
      assert.equal(small!.exactFallbacks, 1);
      assert.equal(reasons.length, 1);
    } finally {
      small?.destroy();
    }
  },
});

Deno.test({
  name: "GpuEngine.upload(): resident weights give the same answer as an upload per call, and must match the layer",
  ignore: !engine,
  async fn() {
    // A 4-tile engine (19 rows of 23 f32 per 1792 bytes) as well as a 1-tile one; f16 (two values per 32-bit word,
    // an odd count per tile) and f32.
    const tiled = await GpuEngine.create({ allowFallback: true, maxTileBytes: 1792 });
    try {
      for (const e of [engine!, tiled!]) {
        for (const dtype of ["f16", "f32"] as const) {
          const rows = 61, cols = 23;
          const v = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.7) * 0.05);
          const weight = encode(v, dtype);
          const layer = { name: "r", rows, cols, dtype, weight, actNormSq: new Float32Array(cols).fill(2) };
          const params = {
            method: "zpruner" as const,
            pattern: { kind: "layer" as const, sparsity: 0.4 },
            exponent: 1.5,
            returnWeight: true,
            returnScore: true,
          };
          const resident = e.upload(layer);
          try {
            const a = (await e.prune(params, layer)).output;
            // The request's own bytes are zeros: only the resident copy can give the same answer.
            const zeros = { ...layer, weight: new Uint8Array(weight.length) };
            const b = (await e.prune(params, zeros, { resident })).output;
            assert.deepEqual(b.mask, a.mask);
            assert.deepEqual(b.weight, a.weight);
            assert.deepEqual(b.score, a.score);
            assert.deepEqual(b.stats, a.stats);
            // Another layer's, or another engine's tile plan: a caller's bug, not a retryable `unavailable`.
            const callerBug = (err: unknown) =>
              err instanceof TypeError && /^resident weights (are 61x23|for layer r were not)/.test(err.message);
            const other = e === engine ? tiled! : engine!;
            await assert.rejects(e.prune(params, { ...layer, rows: 60 }, { resident }), callerBug);
            await assert.rejects(e.prune(params, { ...layer, dtype: "bf16" }, { resident }), callerBug);
            await assert.rejects(other.prune(params, layer, { resident }), callerBug);
            // The same buffers and fields, not made by upload(): the tile plan they follow is unknown.
            await assert.rejects(e.prune(params, layer, { resident: { ...resident } }), callerBug);
          } finally {
            resident.destroy();
          }
        }
      }
    } finally {
      tiled?.destroy();
    }
  },
});

Deno.test({
  name: "GpuEngine.prune(): RIA with a row sum of |w| of 2^126 or more takes the exact path, as the CPU backend",
  ignore: !engine,
  async fn() {
    // 16 x 64 f32 weights 2^120 * (1 + u): row sums of |w| about 2^126.6 (a GPU that divides as x * (1 / y) flushes
    // 1 / y to 0, and every score with it), column sums about 2^124.6. Scaled by 2^-4, every sum stays below 2^126.
    const rand = rng(5);
    const u = Float64Array.from({ length: 16 * 64 }, () => rand());
    const act = Float32Array.from({ length: 64 }, (_, j) => 0.5 + (j % 5));
    for (const [scale, exact] of [[2 ** 120, true], [2 ** 116, false]] as const) {
      const w = Float32Array.from(u, (x) => scale * (1 + x));
      const layer = {
        name: "ria-big",
        rows: 16,
        cols: 64,
        dtype: "f32" as const,
        weight: encode(w, "f32"),
        actNormSq: act,
      };
      for (const pattern of [{ kind: "layer", sparsity: 0.5 }, { kind: "row", sparsity: 0.3 }] as const) {
        const params = { method: "ria" as const, pattern, exponent: 0.5, returnWeight: false, returnScore: false };
        const told: string[] = [];
        engine!.onExactPath = (name, why) => told.push(`${name}: ${why}`);
        const before = engine!.exactFallbacks;
        const got = (await engine!.prune(params, { ...layer, weight: layer.weight.slice() })).output;
        engine!.onExactPath = null;
        const want = await pruneLayer(params, { ...layer, weight: layer.weight.slice() });
        assert.deepEqual(got.mask, want.mask, `2^${Math.log2(scale)} ${pattern.kind}`);
        assert.equal(got.stats.pruned, want.stats.pruned);
        assert.equal(engine!.exactFallbacks, before + (exact ? 1 : 0), `2^${Math.log2(scale)} ${pattern.kind}`);
        if (exact) assert.match(told[0]!, /^ria-big: row \d+'s sum of \|w\| is 2\^126 or more/);
        else assert.deepEqual(told, []);
      }
    }
  },
});

/** A layer whose f32 statistics leave float32's range in `row` (scaled by `scale`); elsewhere ordinary weights. */
function extremeLayer(rows: number, cols: number, row: number, scale: number, dtype: "f32" | "bf16" = "f32") {
  const w = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.7) * 0.02 + (i % 7 === 0 ? 0.01 : 0));
  for (let j = 0; j < cols; j++) w[row * cols + j]! *= scale;
  const act = new Float32Array(cols).map((_, j) => 0.5 + (j % 5));
  return { name: "extreme", rows, cols, dtype, weight: encode(w, dtype), actNormSq: act };
}

Deno.test({
  name: "GpuEngine.prune(): layers whose f32 arithmetic could differ from the CPU's are computed exactly",
  ignore: !engine,
  async fn() {
    const { pruneLayer } = await import("../prune/prune_layer.ts");
    // RIA: one weight of 1e-10 whose row and column otherwise hold 1e30: its quotients are subnormal, though its
    // score (times activations of 1e15) is not.
    const riaTiny = { ...extremeLayer(4, 8, 0, 1), actNormSq: new Float32Array(8).fill(1e30) };
    const w = new Float32Array(4 * 8).fill(0.5);
    for (let j = 0; j < 8; j++) w[j] = 1e30;
    for (let r = 0; r < 4; r++) w[r * 8] = 1e30;
    w[0] = 1e-10;
    riaTiny.weight = encode(w, "f32");
    // Wanda: activations of 1e-38 (actNormSq 1e-19 to the power 4 / 2) take scores of 0.02 into the subnormals.
    const wandaTiny = { ...extremeLayer(24, 40, 0, 1), actNormSq: new Float32Array(40).fill(1e-19) };
    const cases = [
      // A row of weights near 2e36: its sum of squares overflows f32 (the CPU's f64 does not).
      { layer: extremeLayer(24, 40, 5, 1e38), methods: ["zpruner"], exponent: 1 },
      // A row of weights near 2e38: its sum of |w| overflows f32 too.
      { layer: extremeLayer(24, 40, 5, 1e40), methods: ["ria"], exponent: 1 },
      // A row of weights near 2e-24: their squares are below f32's normal range.
      { layer: extremeLayer(24, 40, 9, 1e-22), methods: ["zpruner"], exponent: 1 },
      // bf16 subnormals (below 1.2e-38): a GPU may flush them to zero in arithmetic.
      { layer: extremeLayer(24, 40, 3, 1e-37, "bf16"), methods: ["magnitude", "wanda", "zpruner", "ria"], exponent: 1 },
      { layer: riaTiny, methods: ["ria"], exponent: 1 },
      { layer: wandaTiny, methods: ["wanda"], exponent: 4 },
    ] as const;
    for (const { layer, methods, exponent } of cases) {
      for (const method of methods) {
        for (const pattern of [{ kind: "layer", sparsity: 0.5 }, { kind: "row", sparsity: 0.3 }] as const) {
          const params = { method, pattern, exponent, returnWeight: false, returnScore: false };
          const before = engine!.exactFallbacks;
          const told: string[] = [];
          engine!.onExactPath = (name, why) => told.push(`${name}: ${why}`);
          await engine!.prune(params, layer);
          engine!.onExactPath = null;
          assert.equal(engine!.exactFallbacks, before + 1, `${layer.dtype} ${method} ${pattern.kind}: on the CPU path`);
          assert.equal(told.length, 1);
          assert.match(told[0]!, /^extreme: (a subnormal weight or score|(row|column) \d+'s sum)/);
        }
      }
    }
    // Ordinary layers, zero rows included, stay on the GPU and match the CPU backend; so does RIA on a layer whose
    // squares overflow f32 (it does not use them) while its quotients stay normal.
    const ordinary = extremeLayer(24, 40, 2, 0);
    const onGpu = [
      ...(["magnitude", "wanda", "zpruner", "ria"] as const).map((m) => [m, ordinary] as const),
      ["ria", extremeLayer(24, 40, 5, 1e21)] as const,
    ];
    for (const [method, layer] of onGpu) {
      const before = engine!.exactFallbacks;
      const params = { method, pattern: { kind: "layer", sparsity: 0.5 } as const, exponent: 1 };
      const { output } = await engine!.prune({ ...params, returnWeight: false, returnScore: true }, layer);
      assert.equal(engine!.exactFallbacks, before, `${method}: on the GPU`);
      const ref = await pruneLayer({ ...params, returnWeight: false, returnScore: true }, layer);
      assert.deepEqual(output.mask, ref.mask, `${method} on the GPU`);
    }
  },
});

/** A 16x32 f32 layer of `value(i)` and magnitude at 0.5, for the tests that break an engine of their own. */
function smallMagnitudeLayer(name: string, value: (i: number) => number) {
  const layer = {
    name,
    rows: 16,
    cols: 32,
    dtype: "f32" as const,
    weight: new Uint8Array(new Float32Array(16 * 32).map((_, i) => value(i)).buffer),
    actNormSq: null,
  };
  return { layer, params: MAGNITUDE_HALF };
}

Deno.test({
  name:
    "GpuEngine.prune()'s trace tells each stage recorded, the submit, the read-back and the answer or the exact path",
  ignore: !engine,
  async fn() {
    const { layer, params } = smallMagnitudeLayer("traced", Math.sin);
    const events: string[] = [];
    const { output } = await engine!.prune(params, layer, { trace: (e) => events.push(e) });
    assert.equal(output.exactPath, undefined);
    // Magnitude has no stats, centred or apply stage; the read-back brings the mask, select state and bad weights.
    assert.deepEqual(events, [
      "recorded decode",
      "recorded score",
      "recorded select",
      "submit",
      "submitted",
      "map 3 buffer(s)",
      "mapped",
      "answered",
    ]);
    // A subnormal f32 weight: the read-back's checks send the layer to the exact path, and the trace says why.
    const f32 = new Float32Array(layer.weight.slice().buffer);
    f32[5] = 1e-40;
    events.length = 0;
    const exact = await engine!.prune(params, { ...layer, weight: new Uint8Array(f32.buffer) }, {
      trace: (e) => events.push(e),
    });
    assert.equal(events.at(-2), "mapped");
    assert.equal(events.at(-1), `exact path: ${exact.output.exactPath}`);
    assert.match(events.at(-1)!, /subnormal/);
  },
});

Deno.test({
  name: "GpuEngine.prune(): a device lost before the read-back's map is named as lost (the server replaces it)",
  ignore: !engine,
  async fn() {
    // An engine of its own: this one's device is destroyed.
    await withOwnEngine(async (own) => {
      const { layer, params } = smallMagnitudeLayer("gone", Math.cos);
      // Deno rejects the map as "validation error occurred", whatever the cause; the loss must be what the error says.
      const trace = (event: string) => event.startsWith("map ") && own.device.destroy();
      await assert.rejects(own.prune(params, layer, { trace }), (e: unknown) => {
        assert.ok(e instanceof ZpruneError);
        assert.equal(e.code, "unavailable");
        assert.match(e.message, /^WebGPU device lost: /);
        return true;
      });
      assert.notEqual(own.lost, null);
    });
  },
});

Deno.test({
  name: "GpuEngine.prune(): an internal error of the driver during a job is unavailable, never an answer",
  ignore: !engine,
  async fn() {
    // An engine of its own: its device's error scopes are wrapped so that the first "internal" scope a job pops
    // reports an error (a driver's own failure cannot be provoked on purpose), the others what they caught.
    await withOwnEngine(async (own) => {
      let injected = 0;
      const failure = { message: "injected driver failure" } as GPUError;
      const { open: filters } = injectScopes(own.device, (f) => f === "internal" && injected++ === 0 ? failure : null);
      const { layer, params } = smallMagnitudeLayer("internal", Math.sin);
      await assert.rejects(own.prune(params, layer), (e: unknown) => {
        assert.ok(e instanceof ZpruneError, String(e));
        assert.equal(e.code, "unavailable");
        assert.match(e.message, /^WebGPU internal error: injected driver failure/);
        return true;
      });
      assert.equal(injected, 1);
      assert.equal(filters.length, 0, `scopes left open: ${filters}`);
      // The next job (no error injected) answers as the CPU backend does.
      const { output } = await own.prune(params, layer);
      assert.deepEqual(output.mask, (await pruneLayer(params, layer)).mask);
      // warm() (the start of a backend) refuses a device whose driver fails building a pipeline, leaving no scope.
      injected = 0;
      await assert.rejects(own.warm(), /^ZpruneError: WebGPU kernel compilation failed: injected driver failure/);
      assert.equal(filters.length, 0, `scopes left open: ${filters}`);
    });
  },
});

Deno.test({
  name: "GpuEngine.prune(): rows past the error model's trusted sums take the exact path, Z-Pruner and RIA",
  ignore: !engine,
  async fn() {
    // 2 x 1,048,576: rows whose f32 sums may be off by 86 roundings, past Z-Pruner's measured limit and RIA's worst
    // case (tests/crafted_sums_test.ts crafts such sums). Any values will do here: the shape alone decides, before any
    // GPU work.
    const rows = 2, cols = 2 ** 20;
    const v = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.37) * 0.02);
    const layer = {
      name: "wide",
      rows,
      cols,
      dtype: "f32" as const,
      weight: new Uint8Array(v.buffer),
      actNormSq: null,
    };
    for (const method of ["zpruner", "ria"] as const) {
      const params = {
        method,
        pattern: { kind: "layer" as const, sparsity: 0.5 },
        exponent: 1,
        returnWeight: false,
        returnScore: false,
      };
      const { output } = await engine!.prune(params, { ...layer, weight: layer.weight.slice() });
      const why = new RegExp(`row sums may be off by 86 roundings.*: ${method} masks could leave`);
      assert.match(output.exactPath ?? "(answered on the GPU)", why);
      const ref = await pruneLayer(params, { ...layer, weight: layer.weight.slice() });
      assert.deepEqual(output.mask, ref.mask);
    }
  },
});

/** Layers of several shapes and dtypes, N:M-ready (columns a multiple of 8), seeded. */
function groupLayers(seed: number): LayerJob[] {
  const rand = rng(seed);
  const shapes = [[16, 32], [7, 8], [64, 48], [1, 8], [33, 40]] as const;
  const dtypes = ["f32", "f16", "bf16"] as const;
  return shapes.map(([rows, cols], i) => {
    const dtype = dtypes[i % 3]!;
    const { weight, actNormSq } = randomLayer(rand, { rows, cols, dtype, ties: i === 2, zeros: i === 4 });
    return { name: `g${i}`, rows, cols, dtype, weight, actNormSq };
  });
}

Deno.test({
  name: "GpuEngine.pruneGroup() answers every layer as prune() does alone, masks as the CPU's, each method and pattern",
  ignore: !engine,
  async fn() {
    const cases: PruneParams[] = [
      {
        method: "zpruner",
        pattern: { kind: "layer", sparsity: 0.5 },
        exponent: 1,
        returnWeight: true,
        returnScore: false,
      },
      { method: "wanda", pattern: { kind: "row", sparsity: 0.3 }, exponent: 1, returnWeight: false, returnScore: true },
      { method: "ria", pattern: { kind: "nm", n: 2, m: 4 }, exponent: 0.5, returnWeight: false, returnScore: false },
      { method: "magnitude", pattern: { kind: "nm", n: 4, m: 8 }, exponent: 1, returnWeight: true, returnScore: true },
    ];
    for (const [c, params] of cases.entries()) {
      const layers = groupLayers(100 + c);
      const got = await engine!.pruneGroup(params, layers.map(copyLayer));
      assert.equal(got.length, layers.length);
      for (const [i, out] of got.entries()) {
        assert.ok(!(out instanceof Error), `${params.method} ${layers[i]!.name}: ${out}`);
        const what = `${params.method} ${params.pattern.kind} ${layers[i]!.name}`;
        // The same kernels on the same layer: the same answer to the bit (stats, scores) as the layer alone.
        assert.deepEqual(out, (await engine!.prune(params, copyLayer(layers[i]!))).output, what);
        assert.equal(out.exactPath, undefined, what);
        assert.deepEqual(out.mask, (await pruneLayer(params, copyLayer(layers[i]!))).mask, what);
      }
    }
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup(): a layer's non-finite weight or exact path is its own; the others answer",
  ignore: !engine,
  async fn() {
    const params: PruneParams = { ...MAGNITUDE_HALF, method: "zpruner" };
    const layers = groupLayers(7);
    const f32 = new Float32Array(layers[0]!.weight.slice().buffer);
    f32[9] = NaN;
    layers[0] = { ...layers[0]!, weight: new Uint8Array(f32.buffer) };
    const sub = new Float32Array(layers[3]!.rows * layers[3]!.cols).fill(0.25);
    sub[2] = 1e-40; // a subnormal weight: the read-back's checks send the layer to the exact path
    layers[3] = { ...layers[3]!, dtype: "f32", weight: new Uint8Array(sub.buffer) };
    const before = engine!.exactFallbacks;
    const got = await engine!.pruneGroup(params, layers.map(copyLayer));
    const nan = got[0]!;
    assert.ok(nan instanceof ZpruneError && nan.code === "non_finite", String(nan));
    assert.match(nan.message, /g0/);
    for (const i of [1, 2, 3, 4]) {
      const out = got[i]!;
      assert.ok(!(out instanceof Error), String(out));
      assert.deepEqual(out.mask, (await pruneLayer(params, copyLayer(layers[i]!))).mask, layers[i]!.name);
      if (i === 3) assert.match(out.exactPath ?? "(answered on the GPU)", /subnormal/);
      else assert.equal(out.exactPath, undefined);
    }
    assert.equal(engine!.exactFallbacks, before + 1);
  },
});

Deno.test({
  name:
    "GpuEngine.pruneGroup(): a driver error or lack of memory in one layer's job is that layer's; no scope left open",
  ignore: !engine,
  async fn() {
    await withOwnEngine(async (own) => {
      const layers = groupLayers(11);
      // Pops, in order: each job's staging scope (out-of-memory), then its three scopes at its submit; the maps'
      // three last. The first "internal" pop is layer 0's submit; the fourth "out-of-memory" pop, layer 1's.
      let internal = 0, oom = 0;
      const { open } = injectScopes(own.device, (f) => {
        if (f === "internal" && internal++ === 0) return { message: "injected driver failure" } as GPUError;
        if (f === "out-of-memory" && oom++ === 3) return { message: "injected lack of memory" } as GPUError;
        return null;
      });
      const got = await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
      const failed = got[0]!;
      assert.ok(failed instanceof ZpruneError && failed.code === "unavailable", String(failed));
      assert.match(failed.message, /^WebGPU internal error: injected driver failure/);
      // Layer 1 ran out of memory: tried again alone, after the others, and answered.
      assert.equal(own.outOfMemory, 1);
      for (const i of [1, 2, 3, 4]) {
        const out = got[i]!;
        assert.ok(!(out instanceof Error), String(out));
        assert.deepEqual(out.mask, (await pruneLayer(MAGNITUDE_HALF, copyLayer(layers[i]!))).mask, layers[i]!.name);
      }
      assert.equal(open.length, 0, `scopes left open: ${open}`);
    });
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup(): a device lost while the group's read-backs map fails every layer as lost",
  ignore: !engine,
  async fn() {
    await withOwnEngine(async (own) => {
      const layers = groupLayers(13);
      const queue = own.device.queue as unknown as { submit(c: GPUCommandBuffer[]): void };
      const submit = queue.submit.bind(queue);
      let submits = 0;
      // The last layer's submit, then the loss: every layer's work is queued, none is mapped yet.
      queue.submit = (c) => {
        submit(c);
        if (++submits === layers.length) own.device.destroy();
      };
      const got = await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
      for (const out of got) {
        assert.ok(out instanceof ZpruneError && out.code === "unavailable", String(out));
        assert.match(out.message, /^WebGPU device lost: /);
      }
      assert.notEqual(own.lost, null);
      // Once lost, a group fails at once, layer by layer, without touching the device.
      const again = await own.pruneGroup(MAGNITUDE_HALF, layers.slice(0, 2).map(copyLayer));
      assert.deepEqual(again.map((e) => (e as Error).message.slice(0, 20)), Array(2).fill("WebGPU device lost: "));
    });
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup(): a failure of the group's mapping itself fails each layer, and the engine goes on",
  ignore: !engine,
  async fn() {
    await withOwnEngine(async (own) => {
      const layers = groupLayers(17).slice(0, 2);
      const { open, restore } = injectScopes(own.device, () => null); // to see every scope closed
      const d = own.device as unknown as { pushErrorScope(f: GPUErrorFilter): void };
      const push = d.pushErrorScope.bind(d);
      let internal = 0;
      // Each job pushes an "internal" scope first when it starts; the third is the group's mapping's, whose next push
      // fails, with one scope pushed.
      d.pushErrorScope = (f) => {
        if (f === "internal") internal++;
        else if (internal === 3) throw new Error("injected push failure");
        push(f);
      };
      const got = await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
      restore();
      assert.equal(internal, 3);
      assert.equal(open.length, 0, `scopes left open: ${open}`);
      for (const e of got) {
        assert.ok(e instanceof ZpruneError && e.code === "unavailable", String(e));
        assert.match(e.message, /^WebGPU failed: injected push failure/);
      }
      const again = await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
      for (const [i, out] of again.entries()) {
        assert.ok(!(out instanceof Error), String(out));
        assert.deepEqual(out.mask, (await pruneLayer(MAGNITUDE_HALF, copyLayer(layers[i]!))).mask);
      }
    });
  },
});

/**
 * Records each call of the device's methods that compute anything (buffers, encoders, writes, submits), by name, in
 * order; `restore` puts the device's own methods back.
 */
function watchDeviceCalls(device: GPUDevice): { calls: string[]; restore: () => void } {
  const calls: string[] = [];
  const d = device as unknown as Record<string, (...args: unknown[]) => unknown>;
  const q = device.queue as unknown as Record<string, (...args: unknown[]) => unknown>;
  const wrapped: [Record<string, (...args: unknown[]) => unknown>, string][] = [
    [d, "createBuffer"],
    [d, "createCommandEncoder"],
    [q, "submit"],
    [q, "writeBuffer"],
  ];
  for (const [o, name] of wrapped) {
    const f = o[name]!.bind(o);
    o[name] = (...args) => (calls.push(name), f(...args));
  }
  return { calls, restore: () => wrapped.forEach(([o, name]) => delete o[name]) };
}

Deno.test({
  name: "GpuEngine: a lost device fails each layer at once, without using it; a resident-weights bug stays a TypeError",
  ignore: !engine,
  async fn() {
    await withOwnEngine(async (own) => {
      own.device.destroy();
      await own.device.lost; // the engine's own handler, registered first, has run by now
      assert.notEqual(own.lost, null);
      // A lost device cannot compute anything: the layers are answered at once, no work is recorded for it
      // (docs/GPU.md: the backend replaces the worker).
      const seen = watchDeviceCalls(own.device);
      try {
        const { layer, params } = smallMagnitudeLayer("after-loss", Math.sin);
        const lostError = (e: unknown) =>
          e instanceof ZpruneError && e.code === "unavailable" && /^WebGPU device lost: /.test(e.message);
        await assert.rejects(own.prune(params, layer), lostError);
        // Resident weights of another engine are the caller's bug, said as such (a TypeError) even on a lost device,
        // not a retryable unavailable.
        const resident = engine!.upload(layer);
        try {
          await assert.rejects(own.prune(params, layer, { resident }), TypeError);
        } finally {
          resident.destroy();
        }
        const got = await own.pruneGroup(params, groupLayers(19).slice(0, 3).map(copyLayer));
        assert.equal(got.length, 3);
        for (const out of got) assert.ok(lostError(out), String(out));
        assert.deepEqual(seen.calls, []);
      } finally {
        seen.restore();
      }
    });
  },
});

Deno.test({
  name: "GpuEngine.prune(): a WebGPU call that throws is unavailable, the thrown error its cause; the next job answers",
  ignore: !engine,
  async fn() {
    await withOwnEngine(async (own) => {
      const { open, restore } = injectScopes(own.device, () => null); // to see every scope closed
      const d = own.device as unknown as {
        createCommandEncoder(desc?: GPUCommandEncoderDescriptor): GPUCommandEncoder;
      };
      const create = d.createCommandEncoder.bind(d);
      const thrown = new Error("injected encoder failure");
      let fail = true;
      d.createCommandEncoder = (desc) => {
        if (fail) throw thrown;
        return create(desc);
      };
      try {
        const { layer, params } = smallMagnitudeLayer("throws", Math.cos);
        await assert.rejects(own.prune(params, copyLayer(layer)), (e: unknown) => {
          assert.ok(e instanceof ZpruneError, String(e));
          assert.equal(e.code, "unavailable");
          assert.equal(e.message, "WebGPU failed: injected encoder failure");
          assert.equal(e.cause, thrown);
          return true;
        });
        assert.deepEqual(open, [], "no error scope left open");
        fail = false;
        const { output } = await own.prune(params, copyLayer(layer));
        assert.deepEqual(output.mask, (await pruneLayer(params, copyLayer(layer))).mask);
      } finally {
        delete (d as Partial<typeof d>).createCommandEncoder;
        restore();
      }
    });
  },
});

Deno.test({
  name: "GpuEngine.prune(): profile false, like no profile, times nothing",
  ignore: !engine,
  async fn() {
    const { layer, params } = smallMagnitudeLayer("unprofiled", Math.sin);
    const events: string[] = [];
    const { output, stages } = await engine!.prune(params, copyLayer(layer), {
      profile: false,
      trace: (e) => events.push(e),
    });
    assert.equal(stages, undefined);
    assert.deepEqual(output.mask, (await pruneLayer(params, copyLayer(layer))).mask);
    // One submit for the whole layer: no stage was submitted alone to be timed by the wall clock.
    assert.deepEqual(events.filter((e) => e === "submit"), ["submit"]);
  },
});

Deno.test({
  name: "GpuEngine.prune(): out of memory with idle buffers: frees them, waits for the queue, then tries again",
  ignore: !engine,
  async fn() {
    // wgpu frees a destroyed buffer that a submit used only once it has seen that submit complete, which it learns when
    // the device is polled: the retry must come after the queue says its work is done, or the memory of the idle
    // buffers just destroyed may not be free yet.
    await withOwnEngine(async (own) => {
      const log: string[] = [];
      let earlier = true;
      const unwatch = onEachBuffer(own.device, (b, desc) => {
        const destroy = b.destroy.bind(b), what = earlier ? "idle" : "own";
        b.destroy = () => (log.push(`destroy ${what} ${desc.label}`), destroy());
      });
      // An earlier layer of another shape leaves its buffers idle in the pool.
      await own.prune(MAGNITUDE_HALF, groupLayers(23)[2]!);
      earlier = false;
      log.length = 0;
      const q = own.device.queue as unknown as { onSubmittedWorkDone(): Promise<undefined> };
      const workDone = q.onSubmittedWorkDone.bind(q);
      q.onSubmittedWorkDone = () => workDone().then(() => void log.push("work done"));
      let left = 1;
      const scopes = injectScopes(own.device, (f) => {
        if (f === "out-of-memory" && left-- > 0) return { message: "injected lack of memory" } as GPUError;
        return null;
      });
      // Each job, and the read-back's mapping, opens its error scopes with an "internal" one.
      const p = own.device as unknown as { pushErrorScope(f: GPUErrorFilter): void };
      const push = p.pushErrorScope.bind(p);
      p.pushErrorScope = (f) => (f === "internal" && log.push("scopes"), push(f));
      try {
        const { layer, params } = smallMagnitudeLayer("oom-retry", Math.sin);
        const { output } = await own.prune(params, copyLayer(layer));
        assert.equal(own.outOfMemory, 1);
        assert.equal(output.exactPath, undefined, "the retry answered on the GPU");
        assert.deepEqual(output.mask, (await pruneLayer(params, copyLayer(layer))).mask);
        // The first job's scopes (its staging ran out), the idle mask buffer destroyed, the wait, the second job's
        // scopes, then its mapping's.
        const scopesAt = log.flatMap((e, i) => e === "scopes" ? [i] : []);
        const done = log.indexOf("work done"), freed = log.indexOf("destroy idle mask");
        assert.equal(scopesAt.length, 3, log.join(", "));
        assert.ok(scopesAt[0]! < freed && freed < done && done < scopesAt[1]!, log.join(", "));
      } finally {
        delete (p as Partial<typeof p>).pushErrorScope;
        scopes.restore();
        delete (q as Partial<typeof q>).onSubmittedWorkDone;
        unwatch();
      }
    });
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup() of one layer is prune(): out of memory on a fresh engine goes exact after one attempt",
  ignore: !engine,
  async fn() {
    // A fresh engine pools nothing, so emptying its pool cannot help: the layer takes the exact path at once, as
    // prune() alone does (docs/GPU.md); a group of one has no other layers whose buffers a retry alone could wait for.
    await withOwnEngine(async (own) => {
      let left = 1;
      const scopes = injectScopes(own.device, (f) => {
        if (f === "out-of-memory" && left-- > 0) return { message: "injected lack of memory" } as GPUError;
        return null;
      });
      try {
        const layer = groupLayers(29)[0]!;
        const [out] = await own.pruneGroup(MAGNITUDE_HALF, [copyLayer(layer)]);
        assert.ok(out && !(out instanceof Error), String(out));
        assert.equal(own.outOfMemory, 1);
        assert.match(out.exactPath ?? "(answered on the GPU)", /^the GPU ran out of memory/);
        assert.deepEqual(out.mask, (await pruneLayer(MAGNITUDE_HALF, copyLayer(layer))).mask);
        assert.deepEqual(scopes.open, [], "no error scope left open");
      } finally {
        scopes.restore();
      }
    });
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup(): a layer whose read-back could not be mapped for lack of memory is tried again alone",
  ignore: !engine,
  async fn() {
    // A read-back that fails to map while the mapping's out-of-memory scope caught an error ran out of memory: like a
    // layer that runs out while recorded, it is tried again alone once the others have given their buffers back.
    await withOwnEngine(async (own) => {
      const layers = groupLayers(53).slice(0, 3);
      let mapping = false, masks = 0;
      const unwatch = onEachBuffer(own.device, (b, desc) => {
        const mapAsync = b.mapAsync.bind(b);
        // The second layer's mask read-back (the second staging buffer for a mask) fails to map, once.
        const fails = desc.label === "staging:mask" && ++masks === 2;
        b.mapAsync = (mode, offset, size) => {
          mapping = true;
          return fails ? Promise.reject(new Error("injected map failure")) : mapAsync(mode, offset, size);
        };
      });
      let oom = 1;
      const scopes = injectScopes(own.device, (f) => {
        if (f === "out-of-memory" && mapping && oom-- > 0) return { message: "injected lack of memory" } as GPUError;
        return null;
      });
      try {
        const got = await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
        assert.ok(masks > 3, "the second layer was read back again, alone");
        assert.equal(own.outOfMemory, 1);
        for (const [i, out] of got.entries()) {
          assert.ok(!(out instanceof Error), `${layers[i]!.name}: ${out}`);
          assert.equal(out.exactPath, undefined);
          assert.deepEqual(out.mask, (await pruneLayer(MAGNITUDE_HALF, copyLayer(layers[i]!))).mask);
        }
        assert.deepEqual(scopes.open, [], "no error scope left open");
      } finally {
        scopes.restore();
        unwatch();
      }
    });
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup(): layers that ran out of memory are tried again alone in layer order",
  ignore: !engine,
  async fn() {
    // Layer 2 runs out while recorded, layer 0 only when the group's read-backs map (found later): both are tried
    // again alone, layer 0 first, and here run out again and take the exact path, told in that order.
    await withOwnEngine(async (own) => {
      const layers = groupLayers(59).slice(0, 3);
      let phase: "record" | "map" | "retry" = "record", masks = 0, recordOom = 0;
      const unwatch = onEachBuffer(own.device, (b, desc) => {
        const mapAsync = b.mapAsync.bind(b);
        const fails = desc.label === "staging:mask" && ++masks === 1; // layer 0's mask read-back
        b.mapAsync = (mode, offset, size) => {
          if (phase === "record") phase = "map";
          return fails ? Promise.reject(new Error("injected map failure")) : mapAsync(mode, offset, size);
        };
      });
      const oom = { message: "injected lack of memory" } as GPUError;
      const scopes = injectScopes(own.device, (f) => {
        if (f !== "out-of-memory") return null;
        // Each job pops two out-of-memory scopes while recorded (its staging's, then its submit's): the fifth is
        // layer 2's staging. The mapping's is the next one after the maps began; every one after that runs out too.
        if (phase === "record") return ++recordOom === 5 ? oom : null;
        if (phase === "map") phase = "retry";
        return oom;
      });
      const told: string[] = [];
      own.onExactPath = (name) => told.push(name);
      try {
        const got = await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
        assert.deepEqual(told, ["g0", "g2"]);
        for (const [i, out] of got.entries()) {
          assert.ok(!(out instanceof Error), `${layers[i]!.name}: ${out}`);
          assert.equal(out.exactPath === undefined, i === 1, layers[i]!.name);
          assert.deepEqual(out.mask, (await pruneLayer(MAGNITUDE_HALF, copyLayer(layers[i]!))).mask);
        }
        assert.deepEqual(scopes.open, [], "no error scope left open");
      } finally {
        scopes.restore();
        unwatch();
      }
    });
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup(): a layer planned for the exact path leaves no error scope open; the others answer",
  ignore: !engine,
  async fn() {
    // 1024-byte tiles: a row of 300 columns (1200 bytes as f32) takes the exact path before any GPU work, its job
    // already begun (its error scopes pushed), between layers that the GPU answers.
    const small = (await GpuEngine.create({ allowFallback: true, maxTileBytes: 1024 }))!;
    const { open, restore } = injectScopes(small.device, () => null); // to see every scope closed
    try {
      const rand = rng(31);
      const wide = { name: "wide", rows: 2, cols: 300, dtype: "f32" as const, actNormSq: null };
      const layers = [
        groupLayers(37)[0]!,
        { ...wide, weight: randomLayer(rand, { rows: 2, cols: 300, dtype: "f32" }).weight },
        groupLayers(37)[2]!,
      ];
      const told: string[] = [];
      small.onExactPath = (name) => told.push(name);
      const got = await small.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
      for (const [i, out] of got.entries()) {
        assert.ok(!(out instanceof Error), String(out));
        assert.deepEqual(out.mask, (await pruneLayer(MAGNITUDE_HALF, copyLayer(layers[i]!))).mask, layers[i]!.name);
        assert.equal(out.exactPath === undefined, i !== 1, layers[i]!.name);
      }
      assert.deepEqual(told, ["wide"]);
      assert.deepEqual(open, [], "no error scope left open");
    } finally {
      restore();
      small.destroy();
    }
  },
});

/** Records the buffers `device.createBuffer` makes, in order, and which of them were destroyed. */
function watchBuffers(device: GPUDevice): { made: GPUBuffer[]; destroyed: Set<GPUBuffer>; restore: () => void } {
  const made: GPUBuffer[] = [], destroyed = new Set<GPUBuffer>();
  const restore = onEachBuffer(device, (b) => {
    made.push(b);
    const destroy = b.destroy.bind(b);
    b.destroy = () => (destroyed.add(b), destroy());
  });
  return { made, destroyed, restore };
}

/** Calls `fn` on each buffer `device.createBuffer` makes (to watch or alter it); the returned function stops it. */
function onEachBuffer(device: GPUDevice, fn: (b: GPUBuffer, desc: GPUBufferDescriptor) => void): () => void {
  const d = device as unknown as { createBuffer(desc: GPUBufferDescriptor): GPUBuffer };
  const create = d.createBuffer.bind(d);
  d.createBuffer = (desc) => {
    const b = create(desc);
    fn(b, desc);
    return b;
  };
  return () => delete (d as Partial<typeof d>).createBuffer;
}

Deno.test({
  name: "GpuEngine: a job that throws after a scope caught an allocation failure pools none of its buffers",
  ignore: !engine,
  async fn() {
    // A buffer that could not be allocated is invalid; the job then fails with an error of its own (here a WebGPU
    // call that throws). Its scopes are still open: what they caught must still keep its buffers out of the pool, in
    // prune() and in a group's job alike, or a later job would be handed the invalid buffer.
    for (const group of [false, true]) {
      await withOwnEngine(async (own) => {
        let oom = 1;
        const scopes = injectScopes(own.device, (f) => {
          if (f === "out-of-memory" && oom-- > 0) return { message: "injected lack of memory" } as GPUError;
          return null;
        });
        const bufs = watchBuffers(own.device);
        const d = own.device as unknown as {
          createCommandEncoder(desc?: GPUCommandEncoderDescriptor): GPUCommandEncoder;
        };
        const create = d.createCommandEncoder.bind(d);
        let failedJob: GPUBuffer[] | null = null;
        d.createCommandEncoder = (desc) => {
          if (failedJob) return create(desc);
          failedJob = [...bufs.made]; // the first job's buffers, all made before its first command is recorded
          throw new Error("injected encoder failure");
        };
        try {
          const layers = groupLayers(41).slice(0, group ? 3 : 1);
          const got = group
            ? await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer))
            : [await own.prune(MAGNITUDE_HALF, copyLayer(layers[0]!)).then((r) => r.output, (e: Error) => e)];
          const first = got[0]!;
          assert.ok(first instanceof ZpruneError && first.code === "unavailable", String(first));
          assert.match(first.message, /^WebGPU failed: injected encoder failure/);
          for (const [i, out] of got.entries()) {
            if (i === 0) continue;
            assert.ok(!(out instanceof Error), String(out));
            assert.deepEqual(out.mask, (await pruneLayer(MAGNITUDE_HALF, copyLayer(layers[i]!))).mask);
          }
          assert.ok(failedJob!.length > 0);
          for (const b of failedJob!) assert.ok(bufs.destroyed.has(b), `group ${group}: ${b.label} was not destroyed`);
          assert.deepEqual(scopes.open, [], "no error scope left open");
        } finally {
          delete (d as Partial<typeof d>).createCommandEncoder;
          bufs.restore();
          scopes.restore();
        }
      });
    }
  },
});

Deno.test({
  name: "GpuEngine.pruneGroup(): after a failure of the group's mapping itself, none of its buffers is pooled",
  ignore: !engine,
  async fn() {
    // Not one map's failure but the device's: every layer's buffers are suspect, so they are destroyed, and the next
    // group makes its own (docs/GPU.md).
    await withOwnEngine(async (own) => {
      const layers = groupLayers(43).slice(0, 2);
      const bufs = watchBuffers(own.device);
      const d = own.device as unknown as { pushErrorScope(f: GPUErrorFilter): void };
      const push = d.pushErrorScope.bind(d);
      let internal = 0;
      // The third "internal" push is the group's mapping's (each job pushes one first): its next push fails.
      d.pushErrorScope = (f) => {
        if (f === "internal") internal++;
        else if (internal === 3) throw new Error("injected push failure");
        push(f);
      };
      try {
        const got = await own.pruneGroup(MAGNITUDE_HALF, layers.map(copyLayer));
        for (const e of got) {
          assert.ok(e instanceof ZpruneError && /^WebGPU failed: injected/.test(e.message), String(e));
        }
        assert.equal(internal, 3);
        // The engine's own placeholder for unused statistics is not a job's buffer: it lives as long as the engine.
        const failedGroup = bufs.made.filter((b) => b.label !== "unused-stats");
        assert.ok(failedGroup.length > 0);
        for (const b of failedGroup) assert.ok(bufs.destroyed.has(b), `${b.label} was not destroyed`);
      } finally {
        delete (d as Partial<typeof d>).pushErrorScope;
        bufs.restore();
      }
    });
  },
});

Deno.test({
  name: "GpuEngine: once answered, a layer's buffers are pooled: the same layers again make only staging buffers",
  ignore: !engine,
  async fn() {
    // Magnitude binds a placeholder for the statistics it does not use; Z-Pruner with weights uses every stage.
    const zpruner: PruneParams = { ...MAGNITUDE_HALF, method: "zpruner", returnWeight: true };
    for (const params of [MAGNITUDE_HALF, zpruner]) {
      await withOwnEngine(async (own) => {
        const layers = groupLayers(47);
        const run = async () => [
          ...await own.pruneGroup(params, layers.map(copyLayer)),
          (await own.prune(params, copyLayer(layers[0]!))).output,
        ];
        const first = await run();
        const bufs = watchBuffers(own.device);
        try {
          // The same layers again, as a group and alone: every buffer a job holds is reused; only the read-backs'
          // staging buffers (made and destroyed per read-back) are new.
          assert.deepEqual(await run(), first);
          const made = bufs.made.map((b) => b.label);
          assert.deepEqual(made.filter((l) => !l.startsWith("staging:")), [], params.method);
          assert.ok(made.length > 0, "the read-backs' staging buffers were seen");
        } finally {
          bufs.restore();
        }
      });
    }
  },
});

Deno.test({
  name: "GpuEngine.destroy() destroys every buffer it made, pooled ones and its placeholder, then its device",
  ignore: !engine,
  async fn() {
    // "Releases every GPU resource": buffers are freed at once, not left for the device's loss and the collector.
    const own = (await GpuEngine.create({ allowFallback: true }))!;
    const bufs = watchBuffers(own.device);
    try {
      // Magnitude binds the placeholder for the statistics it does not use; its job's buffers end pooled.
      const { layer, params } = smallMagnitudeLayer("destroyed", Math.sin);
      await own.prune(params, layer);
      assert.ok(bufs.made.some((b) => b.label === "unused-stats"));
      assert.ok(bufs.made.some((b) => !bufs.destroyed.has(b)), "buffers are pooled before destroy()");
    } finally {
      own.destroy();
      bufs.restore();
    }
    for (const b of bufs.made) assert.ok(bufs.destroyed.has(b), `${b.label} was not destroyed`);
    assert.equal((await own.device.lost).reason, "destroyed");
  },
});

Deno.test({
  name: "GpuEngine.upload(): the resident weights' destroy() destroys each of their buffers",
  ignore: !engine,
  async fn() {
    // 1792-byte tiles: 61 rows of 23 f32 are 4 tiles, a buffer each.
    const tiled = (await GpuEngine.create({ allowFallback: true, maxTileBytes: 1792 }))!;
    const bufs = watchBuffers(tiled.device);
    try {
      const { weight } = randomLayer(rng(61), { rows: 61, cols: 23, dtype: "f32" });
      const resident = tiled.upload({ name: "resident", rows: 61, cols: 23, dtype: "f32", weight, actNormSq: null });
      assert.equal(resident.buffers.length, 4);
      assert.deepEqual(bufs.made, resident.buffers);
      assert.equal(bufs.destroyed.size, 0);
      resident.destroy();
      for (const b of resident.buffers) assert.ok(bufs.destroyed.has(b), `${b.label} was not destroyed`);
    } finally {
      bufs.restore();
      tiled.destroy();
    }
  },
});

Deno.test({
  name: "GpuEngine.warm(): a validation error while the kernels compile fails it, as an internal one does",
  ignore: !engine,
  async fn() {
    await withOwnEngine(async (own) => {
      let injected = 0;
      const invalid = { message: "injected invalid kernel" } as GPUError;
      const { open } = injectScopes(own.device, (f) => f === "validation" && injected++ === 0 ? invalid : null);
      await assert.rejects(own.warm(), (e: unknown) => {
        assert.ok(e instanceof ZpruneError && e.code === "unavailable", String(e));
        assert.equal(e.message, "WebGPU kernel compilation failed: injected invalid kernel");
        return true;
      });
      assert.equal(injected, 1);
      assert.deepEqual(open, [], "no error scope left open");
      await own.warm(); // nothing injected: the kernels compile
    });
  },
});

Deno.test({
  name: "GpuEngine.create() opens its device with the adapter's storage-binding and buffer-size limits",
  ignore: !engine,
  async fn() {
    // Not WebGPU's defaults (128 MiB bindings, 256 MiB buffers): a layer the adapter could hold would otherwise be cut
    // into more tiles, or take the exact path, for nothing.
    const adapter = (await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }))!;
    assert.equal(engine!.device.limits.maxStorageBufferBindingSize, adapter.limits.maxStorageBufferBindingSize);
    assert.equal(engine!.device.limits.maxBufferSize, adapter.limits.maxBufferSize);
  },
});

Deno.test({
  name: "GpuEngine.create(): an adapter without a description is named by its vendor and architecture",
  ignore: !engine,
  async fn() {
    const gpu = navigator.gpu;
    for (
      const [vendor, architecture, want] of [
        ["acme", "rdna9", "acme rdna9"],
        ["acme", "", "acme"],
        ["", "", "WebGPU adapter"],
      ] as const
    ) {
      // The real adapter, its info replaced by one with no description.
      const requestAdapter = async (opts?: GPURequestAdapterOptions) => {
        const adapter = (await gpu.requestAdapter(opts))!;
        const { device, isFallbackAdapter } = adapter.info;
        const info = { vendor, architecture, device, description: "", isFallbackAdapter };
        return Object.defineProperty(adapter, "info", { value: info });
      };
      Object.defineProperty(navigator, "gpu", { value: { requestAdapter }, configurable: true });
      let own: GpuEngine | null = null;
      try {
        own = await GpuEngine.create({ allowFallback: true });
        assert.equal(own?.description, want);
      } finally {
        delete (navigator as { gpu?: unknown }).gpu;
        own?.destroy();
      }
    }
  },
});
