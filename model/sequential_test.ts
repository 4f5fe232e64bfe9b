import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import { layerStats } from "../prune/mask_stats.ts";
import type { PruneRequestInput, PruneResponse } from "../contract/api.ts";
import type { ZpruneClient } from "../client/mod.ts";
import { emptyStats, LlamaRunner } from "./llama.ts";
import { LINEAR_NAMES } from "./config.ts";
import { loadModel } from "./mod.ts";
import { ForwardPool } from "./pool.ts";
import { decodeToF32 } from "./safetensors.ts";
import { batchBySize, checkModelFits, perplexity, type PrunedBlock, pruneSequential } from "./sequential.ts";

const MODEL = new URL("../models/zp-llama-9m", import.meta.url).pathname;

/** A layer of `bytes` bytes of f16 weights, with no activations, as batchBySize reckons its body. */
const f16Layer = (name: string, bytes: number) => ({
  name,
  weight: { dtype: "f16" as const, shape: [1, bytes / 2], data: new Uint8Array(bytes) },
  actNormSq: { data: new Uint8Array(0) },
});
/** A server's limits with room for any working memory. */
const bodyLimit = (maxBodyBytes: number) => ({ maxBodyBytes, memoryBudgetBytes: 1e12 });

Deno.test("batchBySize() keeps layers in order, each request under the body limit, naming one that cannot fit", () => {
  const layers = [f16Layer("a", 4000), f16Layer("b", 4000), f16Layer("c", 9000), f16Layer("d", 500)];
  // Each layer costs its bytes, 3 per name character and 256; a request 256 more.
  const groups = batchBySize(layers, bodyLimit(10_000));
  assert.deepEqual(groups.map((g) => g.map((l) => l.name)), [["a", "b"], ["c"], ["d"]]);
  assert.deepEqual(batchBySize(layers, bodyLimit(100_000)).map((g) => g.length), [4]);
  assert.throws(
    () => batchBySize(layers, bodyLimit(9_000)),
    (e: unknown) => e instanceof ZpruneError && /^c: .* to send/.test(e.message),
  );
});

Deno.test("batchBySize() keeps each request within the server's memory budget, as the server reckons it", () => {
  // f32 layers of n weights: body n * 4 + 3 + 256 (+ 256 a request); the server's estimate adds the largest layer's
  // scratch, 12.125 n and its row and column vectors (48,000 bytes at 100 x 100 for zpruner: 112 bytes a row, 112 a
  // column and 4 x 64 of row-selection scratch a column), and 2 * n / 8 for the masks of all of them
  // (contract/working_memory.ts). Magnitude's vectors are 8 + 4 x 64 bytes a column only: 26,400.
  const layer = (name: string, n: number) => ({
    name,
    weight: { dtype: "f32" as const, shape: [n / 100, 100], data: new Uint8Array(4 * n) },
    actNormSq: { data: new Uint8Array(0) },
  });
  const layers = ["a", "b", "c", "d", "e"].map((name) => layer(name, 10_000));
  const reckoned = (k: number) => 256 + k * (40_000 + 3 + 256) + 121_250 + 48_000 + k * 2_500;
  assert.equal(reckoned(1), 212_265);
  const split = (memoryBudgetBytes: number) =>
    batchBySize(layers, { maxBodyBytes: 1e12, memoryBudgetBytes }).map((g) => g.map((l) => l.name).join(""));
  assert.deepEqual(split(reckoned(5)), ["abcde"]);
  assert.deepEqual(split(reckoned(5) - 1), ["abcd", "e"]);
  assert.deepEqual(split(reckoned(2)), ["ab", "cd", "e"]);
  assert.deepEqual(split(reckoned(1)), ["a", "b", "c", "d", "e"]);
  assert.throws(
    () => split(reckoned(1) - 1),
    (e: unknown) =>
      e instanceof ZpruneError && e.code === "too_large" && /^a: about 212265 bytes of working/.test(e.message),
  );
  // The method given is the one reckoned with (absent: zpruner's, the costliest).
  const magnitude = (memoryBudgetBytes: number) =>
    batchBySize(layers, { maxBodyBytes: 1e12, memoryBudgetBytes }, "magnitude");
  assert.deepEqual(magnitude(reckoned(1) - 48_000 + 26_400).map((g) => g.length), [1, 1, 1, 1, 1]);
  assert.throws(() => magnitude(reckoned(1) - 48_000 + 26_400 - 1), /: a: about 190665 bytes of working/);
  // With the scores asked back (layer rule le-kth), each layer keeps 4 n bytes more for the answer, twice over.
  const scored = (k: number) => reckoned(k) + k * 80_000;
  const withScores = (memoryBudgetBytes: number) =>
    batchBySize(layers, { maxBodyBytes: 1e12, memoryBudgetBytes }, undefined, true).map((g) => g.length);
  assert.deepEqual(withScores(scored(2)), [2, 2, 1]);
  assert.deepEqual(withScores(scored(2) - 1), [1, 1, 1, 1, 1]);
  assert.deepEqual(split(scored(2) - 1), ["abcde"], "masks only: all in one request");
});

Deno.test("batchBySize(): a request's 256 bytes count in each group and against one layer alone, inclusively", () => {
  // A layer costs its bytes, 3 per name character and 256 (LAYER_OVERHEAD); a request 256 more (REQUEST_OVERHEAD).
  // c costs 9000 + 3 + 256, d 300 + 3 + 256: with the request's 256, 10,074 bytes together, over 10,000.
  const layers = [f16Layer("a", 4000), f16Layer("b", 4000), f16Layer("c", 9000), f16Layer("d", 300)];
  assert.deepEqual(batchBySize(layers, bodyLimit(10_000)).map((g) => g.map((l) => l.name)), [["a", "b"], ["c"], ["d"]]);
  assert.deepEqual(batchBySize(layers, bodyLimit(10_074)).map((g) => g.map((l) => l.name)), [["a", "b"], ["c", "d"]]);
  // One layer alone: its 9259 bytes and the request's 256 fit a limit of exactly 9515, not one byte less.
  assert.equal(batchBySize([f16Layer("c", 9000)], bodyLimit(9_515)).length, 1);
  assert.throws(
    () => batchBySize([f16Layer("c", 9000)], bodyLimit(9_514)),
    (e: unknown) =>
      e instanceof ZpruneError && e.code === "too_large" && /^c: about 9515 bytes .* 9514$/.test(e.message),
  );
});

/**
 * A stand-in for the server: it records each request and answers with masks that prune nothing, as `answer` shapes
 * them, or throws what `fail` gives for a block.
 */
function fakeClient(opts: {
  answer?: (layer: PruneResponse["layers"][number]) => PruneResponse["layers"][number];
  fail?: (block: number) => Error | undefined;
  memoryBudgetBytes?: number;
}): { client: ZpruneClient; requests: PruneRequestInput[] } {
  const requests: PruneRequestInput[] = [];
  const limits = { maxBodyBytes: 1e9, memoryBudgetBytes: opts.memoryBudgetBytes ?? 1e12, maxLayerElements: 1e9 };
  const client = {
    info: () => Promise.resolve({ limits }),
    pruneLayers: (req: PruneRequestInput) => {
      requests.push(req);
      const block = Number(/^model\.layers\.(\d+)\./.exec(req.layers[0]!.name)![1]);
      const failure = opts.fail?.(block);
      if (failure) return Promise.reject(failure);
      const layers = req.layers.map((l) => {
        const [rows, cols] = l.weight.shape as [number, number];
        const mask = new Uint8Array(Math.ceil((rows * cols) / 8));
        const out = {
          name: l.name,
          shape: [rows, cols] as [number, number],
          mask,
          stats: layerStats(mask, rows, cols),
        };
        return opts.answer ? opts.answer(out) : out;
      });
      const timings = { decodeMs: 0, computeMs: 0, encodeMs: 0, totalMs: 0 };
      return Promise.resolve({ backend: "cpu", device: "fake", timings, layers } as PruneResponse);
    },
  };
  return { client: client as unknown as ZpruneClient, requests };
}

Deno.test("pruneSequential() sends actNormSq as the block's summed squared inputs over the window count", async () => {
  const m = await loadModel(MODEL);
  const T = 16, windows = 3;
  const calib = Int32Array.from({ length: windows * T }, (_, i) => (i * 131 + 7) % m.cfg.vocabSize);
  // The oracle: block 0's input statistics from a runner in this process, divided by the 3 windows, as f32.
  const runner = new LlamaRunner(m.cfg, m.weights, { seqLen: T, cacheTokens: windows * T });
  runner.cacheEmbed(calib, windows);
  const stats = emptyStats(m.cfg);
  runner.cacheBlock(0, stats);
  const want = [stats.attnIn, stats.attnIn, stats.attnIn, stats.oIn, stats.mlpIn, stats.mlpIn, stats.downIn]
    .map((sums) => Array.from(Float32Array.from(sums, (x) => x / windows)));
  // The server refuses block 1 about its fourth layer: the error names that layer and the block.
  const refusal = new ZpruneError("non_finite", "layers[3].actNormSq[0] is NaN");
  const { client, requests } = fakeClient({ fail: (block) => block === 1 ? refusal : undefined });
  const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers: 1, calibWindows: windows });
  try {
    const settings = { method: "wanda" as const, pattern: "layer", sparsity: 0.5 };
    await assert.rejects(
      pruneSequential(m.ckpt, m.cfg, pool, client, settings, calib, windows),
      (e: unknown) =>
        e instanceof ZpruneError && e.code === "non_finite" && e.cause === refusal &&
        e.message === "block 1, model.layers.1.self_attn.o_proj.weight: layers[3].actNormSq[0] is NaN",
    );
  } finally {
    pool.close();
  }
  assert.deepEqual(requests[0]!.layers.map((l) => l.name), LINEAR_NAMES.map((n) => `model.layers.0.${n}.weight`));
  const sent = requests[0]!.layers.map((l) => {
    const b = l.actNormSq!.data as Uint8Array;
    return Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
  });
  assert.deepEqual(sent, want);
});

Deno.test("pruneSequential() refuses an answer of another shape and a kept block in another's place", async () => {
  const m = await loadModel(MODEL);
  const T = 16, windows = 2;
  const calib = Int32Array.from({ length: windows * T }, (_, i) => (i * 17 + 3) % m.cfg.vocabSize);
  const settings = { method: "magnitude" as const, pattern: "layer", sparsity: 0.5 };
  const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers: 1, calibWindows: windows });
  try {
    // The same name, its shape transposed (the mask would still be the right length). q_proj, square, passes: the
    // first refused is k_proj.
    const transposed = fakeClient({ answer: (l) => ({ ...l, shape: [l.shape[1]!, l.shape[0]!] }) });
    await assert.rejects(
      pruneSequential(m.ckpt, m.cfg, pool, transposed.client, settings, calib, windows),
      /^Error: server answered model\.layers\.0\.self_attn\.k_proj\.weight for model\.layers\.0\.self_attn\.k_proj/,
    );
    const { client, requests } = fakeClient({});
    const layers = LINEAR_NAMES.map((n) => ({ name: `model.layers.1.${n}.weight` }));
    const record = {
      block: 1,
      collectMs: 0,
      requestMs: 0,
      server: { decodeMs: 0, computeMs: 0, encodeMs: 0, totalMs: 0 },
      applyMs: 0,
    };
    const misplaced = { block: 1, layers, record, backend: "cpu", device: "fake" } as unknown as PrunedBlock;
    await assert.rejects(
      pruneSequential(m.ckpt, m.cfg, pool, client, settings, calib, windows, { done: [misplaced] }),
      /^RangeError: block 1 given as the pruned block 0$/,
    );
    assert.equal(requests.length, 0);
  } finally {
    pool.close();
  }
});

Deno.test("checkModelFits(): the largest layer is inclusive; a NaN weight is named by its row and column", async () => {
  const m = await loadModel(MODEL);
  const limits = { maxBodyBytes: 1e9, memoryBudgetBytes: 1e12 };
  // The bundled model's largest layers are the MLP's, 768 x 256 and 256 x 768.
  checkModelFits(m.ckpt, m.cfg, { ...limits, maxLayerElements: 768 * 256 }, "layer");
  assert.throws(
    () => checkModelFits(m.ckpt, m.cfg, { ...limits, maxLayerElements: 768 * 256 - 1 }, "layer"),
    /^RangeError: model\.layers\.0\.mlp\.gate_proj\.weight: 768 x 256 weights, over the server's largest layer/,
  );
  // gate_proj is 768 x 256 (f16): element 256 + 2 is row 1, column 2. Then the very first element.
  const t = m.ckpt.tensors.get("model.layers.2.mlp.gate_proj.weight")!;
  const bits = new Uint16Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 2);
  for (const [at, where] of [[256 + 2, "row 1, column 2"], [0, "row 0, column 0"]] as const) {
    const kept = bits[at]!;
    bits[at] = 0x7e00; // f16 NaN
    try {
      assert.throws(
        () => checkModelFits(m.ckpt, m.cfg, { ...limits, maxLayerElements: 1e9 }, "layer"),
        new RegExp(
          `^RangeError: model\\.layers\\.2\\.mlp\\.gate_proj\\.weight: weight\\[${at}\\] \\(${where}\\) is NaN`,
        ),
      );
    } finally {
      bits[at] = kept;
    }
  }
});

Deno.test("perplexity() drops a tail shorter than a window, and refuses ids that hold no window", async () => {
  const m = await loadModel(MODEL);
  const T = 16;
  const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers: 1 });
  try {
    const ids = Int32Array.from({ length: 2.5 * T }, (_, i) => (i * 53 + 11) % m.cfg.vocabSize);
    const r = await perplexity(pool, ids);
    assert.deepEqual([r.windows, r.tokens, r.losses.length], [2, 2 * T, 2]);
    // The same as the two whole windows alone.
    assert.deepEqual((await perplexity(pool, ids.subarray(0, 2 * T))).losses, r.losses);
    await assert.rejects(perplexity(pool, ids.subarray(0, T - 1)), /^RangeError: 15 tokens hold no window of 16$/);
  } finally {
    pool.close();
  }
});

/** The f32 values of a request layer's actNormSq. */
function sentActs(l: PruneRequestInput["layers"][number]): number[] {
  const b = l.actNormSq!.data as Uint8Array;
  return Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
}

/** A server's answer pruning every other weight of a layer (mask bytes 0x55), with its stats. */
function halving(l: PruneResponse["layers"][number]): PruneResponse["layers"][number] {
  const mask = new Uint8Array(l.mask.length).fill(0x55);
  return { ...l, mask, stats: layerStats(mask, l.shape[0], l.shape[1]) };
}

Deno.test("pruneSequential() feeds each block the outputs of the blocks before it, as pruned", async () => {
  const T = 8, windows = 2;
  const m = await loadModel(MODEL);
  const calib = Int32Array.from({ length: windows * T }, (_, i) => (i * 97 + 5) % m.cfg.vocabSize);
  // The oracle, one runner in this process on its own copy of the weights (each run below loads its own): block l's
  // statistics are taken on the hidden states that blocks 0 .. l - 1 produce once each is pruned (the way
  // reference.json was made).
  const own = m;
  const runner = new LlamaRunner(own.cfg, own.weights, { seqLen: T, cacheTokens: windows * T });
  runner.cacheEmbed(calib, windows);
  const want: number[][][] = [];
  for (let l = 0; l < own.cfg.nLayers; l++) {
    const s = emptyStats(own.cfg);
    runner.cacheBlock(l, s);
    want.push(
      [s.attnIn, s.attnIn, s.attnIn, s.oIn, s.mlpIn, s.mlpIn, s.downIn].map((x) =>
        Array.from(Float32Array.from(x, (v) => v / windows))
      ),
    );
    for (const name of LINEAR_NAMES) {
      const [rows, cols] = own.ckpt.tensors.get(`model.layers.${l}.${name}.weight`)!.shape as [number, number];
      runner.maskLinear(l, name, new Uint8Array(rows * cols / 8).fill(0x55));
    }
    runner.cacheBlock(l);
  }
  const settings = { method: "wanda" as const, pattern: "layer", sparsity: 0.5 };
  const run = async (done: PrunedBlock[] = []) => {
    const model = await loadModel(MODEL);
    const { client, requests } = fakeClient({ answer: halving });
    // Counts the server's info requests too.
    let infos = 0;
    const counted = { ...client, info: () => (infos++, client.info()) } as unknown as ZpruneClient;
    const kept: PrunedBlock[] = [];
    const pool = await ForwardPool.create(model.cfg, model.weights, { seqLen: T, workers: 1, calibWindows: windows });
    // Counts the calibration's starts and the blocks' forwards that move its states on.
    const calls = { begin: 0, advance: 0 };
    const [begin, advance] = [pool.calibBegin.bind(pool), pool.calibAdvance.bind(pool)];
    pool.calibBegin = (...a) => (calls.begin++, begin(...a));
    pool.calibAdvance = (...a) => (calls.advance++, advance(...a));
    try {
      const keep = (b: PrunedBlock) => Promise.resolve(void kept.push(b));
      const result = await pruneSequential(model.ckpt, model.cfg, pool, counted, settings, calib, windows, {
        done,
        keep,
      });
      return { model, requests, kept, result, infos, calls };
    } finally {
      pool.close();
    }
  };
  const full = await run();
  const blocks = m.cfg.nLayers;
  assert.equal(full.requests.length, blocks);
  assert.deepEqual(full.calls, { begin: 1, advance: blocks - 1 });
  full.requests.forEach((req, l) => {
    assert.deepEqual(req.layers.map((x) => x.name), LINEAR_NAMES.map((n) => `model.layers.${l}.${n}.weight`));
    assert.deepEqual(req.layers.map(sentActs), want[l], `block ${l}'s actNormSq`);
  });
  // Every layer lost its masked half: the written checkpoint is the pruned one.
  assert.deepEqual(full.result.layers.map((x) => x.name), full.requests.flatMap((r) => r.layers.map((x) => x.name)));
  for (const layer of full.result.layers) assert.ok(layer.zeros >= layer.shape[0] * layer.shape[1] / 2, layer.name);
  assert.deepEqual(full.kept.map((b) => b.block), Array.from({ length: blocks }, (_, l) => l));
  // Each block's record times the advance past it (a forward of the block: a few ms here), kept before it happens; the
  // last block has none (its outputs would feed no block).
  for (const [l, b] of full.result.blocks.entries()) {
    assert.equal(b.advanceMs === undefined, l === blocks - 1, `block ${l}: ${JSON.stringify(b)}`);
    assert.ok((b.advanceMs ?? 1) > 0 && b.collectMs > 0, `block ${l}: ${JSON.stringify(b)}`);
    assert.deepEqual({ ...b, advanceMs: undefined }, { ...full.kept[l]!.record, advanceMs: undefined });
    assert.equal(full.kept[l]!.record.advanceMs, undefined);
  }
  // Continued from its first two blocks, a run asks only for the others, and asks the same; continued from all of
  // them, it asks nothing. Either way the checkpoint ends as the uninterrupted run's.
  for (const done of [2, blocks]) {
    const resumed = await run(full.kept.slice(0, done));
    assert.deepEqual(resumed.requests.map((r) => r.layers.map(sentActs)), want.slice(done), `${done} done`);
    // With every block done, the server is not asked even for its limits: the run needs no server, nor calibration.
    assert.equal(resumed.infos, done === blocks ? 0 : 1);
    assert.deepEqual(resumed.calls, done === blocks ? { begin: 0, advance: 0 } : full.calls, `${done} done`);
    assert.equal(resumed.result.layers.length, blocks * LINEAR_NAMES.length);
    assert.deepEqual(
      resumed.result.blocks.map((b) => b.advanceMs === undefined),
      full.kept.map((_, l) => l < done || l === blocks - 1),
    );
    for (const [name, t] of full.model.ckpt.tensors) {
      assert.deepEqual(resumed.model.ckpt.tensors.get(name)!.data, t.data, `${done} done: ${name}`);
    }
  }
});

Deno.test("pruneSequential() sums a block's requests: server timings, and layers by backend and device", async () => {
  const T = 8, windows = 1;
  const m = await loadModel(MODEL);
  const calib = Int32Array.from({ length: windows * T }, (_, i) => (i * 31 + 1) % m.cfg.vocabSize);
  // Under a body limit of 400,000 bytes, the bundled model's f16 layers (each weights, activations, 3 bytes a name
  // character and 256) go as q, k, v and o together (132,466 + 2 x 66,930 + 132,466 + 256 = 399,048 bytes), then
  // gate, up and down alone (393,216 bytes of weights each): four requests a block. Attention's layers are answered on
  // one device, the MLP's on another.
  const limits = { maxBodyBytes: 400_000, memoryBudgetBytes: 1e12, maxLayerElements: 1e9 };
  const requests: PruneRequestInput[] = [];
  const client = {
    info: () => Promise.resolve({ limits }),
    pruneLayers: (req: PruneRequestInput) => {
      requests.push(req);
      const layers = req.layers.map((l) => {
        const [rows, cols] = l.weight.shape as [number, number];
        const mask = new Uint8Array(rows * cols / 8);
        return { name: l.name, shape: [rows, cols] as [number, number], mask, stats: layerStats(mask, rows, cols) };
      });
      const device = req.layers[0]!.name.includes("self_attn") ? "gpu0" : "cpu";
      const timings = { decodeMs: 1, computeMs: 2, encodeMs: 3, totalMs: 6 };
      return Promise.resolve({ backend: device === "cpu" ? "cpu" : "webgpu", device, timings, layers });
    },
  } as unknown as ZpruneClient;
  // A model pruned before: each linear layer's first 10 weights are zero already. The answers prune nothing more.
  const linears = [...m.ckpt.tensors.values()].filter((t) => /\.(self_attn|mlp)\./.test(t.name));
  for (const t of linears) t.data.fill(0, 0, 20);
  const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers: 1, calibWindows: windows });
  try {
    const settings = { method: "ria" as const, pattern: "2:4", exponent: 0.5 };
    const r = await pruneSequential(m.ckpt, m.cfg, pool, client, settings, calib, windows);
    // Each request asks for what the settings say.
    for (const req of requests) {
      assert.deepEqual([req.method, req.pattern, req.sparsity, req.options], ["ria", "2:4", undefined, {
        exponent: 0.5,
      }]);
    }
    const blocks = m.cfg.nLayers;
    // Zeros are the weights at zero as written, counted here one by one: 10 a layer at least, none of them pruned now.
    const zeros = new Map(
      linears.map((t) => [t.name, decodeToF32(t.data, "f16").reduce((a, v) => a + (v === 0 ? 1 : 0), 0)]),
    );
    assert.equal(r.pruned, 0);
    assert.deepEqual(r.layers.map((l) => l.zeros), r.layers.map((l) => zeros.get(l.name)));
    assert.equal(r.zeros, [...zeros.values()].reduce((a, b) => a + b, 0));
    assert.ok(r.zeros >= 10 * 7 * blocks);
    assert.equal(requests.length, 4 * blocks);
    for (const b of r.blocks) assert.deepEqual(b.server, { decodeMs: 4, computeMs: 8, encodeMs: 12, totalMs: 24 });
    assert.deepEqual(r.servedBy, [
      { backend: "webgpu", device: "gpu0", layers: 4 * blocks },
      { backend: "cpu", device: "cpu", layers: 3 * blocks },
    ]);
    // The last layer answered (down_proj) names the backend.
    assert.deepEqual([r.backend, r.device], ["cpu", "cpu"]);
  } finally {
    pool.close();
  }
});

Deno.test("batchBySize() makes no request of no layers; checkModelFits() refuses columns N:M can't group", async () => {
  assert.deepEqual(batchBySize([], bodyLimit(1e9)), []);
  const m = await loadModel(MODEL);
  const limits = { maxBodyBytes: 1e9, memoryBudgetBytes: 1e12, maxLayerElements: 1e9 };
  // Every layer of the bundled model has 256 or 768 columns: multiples of 4, 8 and 256, not of 3.
  checkModelFits(m.ckpt, m.cfg, limits, "2:4");
  checkModelFits(m.ckpt, m.cfg, limits, "4:8");
  assert.throws(
    () => checkModelFits(m.ckpt, m.cfg, limits, "1:3"),
    /^RangeError: model\.layers\.0\.self_attn\.q_proj\.weight: its 256 columns are not a multiple of M = 3 \(pattern/,
  );
  checkModelFits(m.ckpt, m.cfg, limits, "2:256");
});

/** Runs `use` on the bundled model with a one-worker pool and one calibration window of 8 tokens, then closes it. */
async function withOneWindow(
  use: (
    m: Awaited<ReturnType<typeof loadModel>>,
    pool: ForwardPool,
    calib: Int32Array,
    windows: number,
  ) => Promise<void>,
): Promise<void> {
  const m = await loadModel(MODEL);
  const T = 8, windows = 1;
  const calib = Int32Array.from({ length: windows * T }, (_, i) => (i * 7 + 2) % m.cfg.vocabSize);
  const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers: 1, calibWindows: windows });
  try {
    await use(m, pool, calib, windows);
  } finally {
    pool.close();
  }
}

/** `l` answered with the f32 score `at(i)` for weight i. */
function withScores(l: PruneResponse["layers"][number], at: (i: number) => number): PruneResponse["layers"][number] {
  const score = Float32Array.from({ length: l.shape[0] * l.shape[1] }, (_, i) => at(i));
  return { ...l, score: { dtype: "f32", shape: l.shape, data: new Uint8Array(score.buffer) } };
}

Deno.test("pruneSequential() under le-kth asks for scores, applies each weight scored at most the k-th", () =>
  withOneWindow(async (m, pool, calib, windows) => {
    // The fake server prunes nothing (k = 0) and scores weight i as i % 5: the lowest score, 0, is every fifth's.
    const scoring = fakeClient({
      answer: (l) => {
        return withScores(l, (i) => i % 5);
      },
    });
    const settings = { method: "magnitude" as const, pattern: "layer", sparsity: 0.5, layerRule: "le-kth" as const };
    await assert.rejects(
      pruneSequential(m.ckpt, m.cfg, pool, scoring.client, { ...settings, pattern: "row" }, calib, windows),
      /^RangeError: layer rule le-kth applies to the layer pattern, not row$/,
    );
    assert.equal(scoring.requests.length, 0);
    const before = new Map([...m.ckpt.tensors].map(([name, t]) => [name, decodeToF32(t.data, t.dtype)]));
    const r = await pruneSequential(m.ckpt, m.cfg, pool, scoring.client, settings, calib, windows);
    assert.ok(scoring.requests.every((q) => q.return?.join() === "mask,score"));
    for (const layer of r.layers) {
      const n = layer.shape[0] * layer.shape[1];
      assert.equal(layer.stats.pruned, Math.ceil(n / 5), layer.name);
      assert.equal(layer.stats.threshold, 0);
      const was = before.get(layer.name)!, t = m.ckpt.tensors.get(layer.name)!, now = decodeToF32(t.data, t.dtype);
      for (let i = 0; i < n; i++) assert.equal(now[i], i % 5 === 0 ? 0 : was[i], `${layer.name}[${i}]`);
    }
    // An answer whose scores are not scores: named with its block, before any of that block's masks is applied.
    const negative = fakeClient({
      answer: (l) => {
        return withScores(l, () => -1);
      },
    });
    await assert.rejects(
      pruneSequential(m.ckpt, m.cfg, pool, negative.client, settings, calib, windows),
      /^ZpruneError: block 0: model\.layers\.0\.self_attn\.q_proj\.weight: score\[0\] is -1, not a finite score/,
    );
  }));

Deno.test("pruneSequential(), checkModelFits() under le-kth count returned scores in the server's budget", () =>
  withOneWindow(async (m, pool, calib, windows) => {
    // A block of the bundled model is about 3.8 MB of working memory with masks back, about 10 MB with the scores (4
    // bytes a weight, kept twice); its largest layer alone about 2.5 MB, and 4 MB with its scores.
    const requests = async (layerRule: "exact" | "le-kth") => {
      const fake = fakeClient({
        memoryBudgetBytes: 6e6,
        answer: (l) => {
          return withScores(l, () => 0);
        },
      });
      const settings = { method: "magnitude" as const, pattern: "layer", sparsity: 0.5, layerRule };
      await pruneSequential(m.ckpt, m.cfg, pool, fake.client, settings, calib, windows);
      return fake.requests.length;
    };
    assert.equal(await requests("exact"), m.cfg.nLayers);
    assert.ok(await requests("le-kth") >= 2 * m.cfg.nLayers);
    const limits = { maxBodyBytes: 1e9, memoryBudgetBytes: 3e6, maxLayerElements: 1e9 };
    checkModelFits(m.ckpt, m.cfg, limits, "layer", "magnitude");
    assert.throws(
      () => checkModelFits(m.ckpt, m.cfg, limits, "layer", "magnitude", true),
      /^RangeError: model\.layers\.0\.mlp\.gate_proj\.weight: about \d+ bytes of working memory/,
    );
  }));

Deno.test("pruneSequential() refuses an answer whose column count differs, its row count the same", () =>
  withOneWindow(async (m, pool, calib, windows) => {
    // q_proj is 256 x 256: answered as 256 x 128, its mask would cover other weights than the ones asked about.
    const halfWide = fakeClient({ answer: (l) => ({ ...l, shape: [l.shape[0], l.shape[1] / 2] }) });
    const settings = { method: "magnitude" as const, pattern: "layer", sparsity: 0.5 };
    await assert.rejects(
      pruneSequential(m.ckpt, m.cfg, pool, halfWide.client, settings, calib, windows),
      /^Error: server answered model\.layers\.0\.self_attn\.q_proj\.weight for model\.layers\.0\.self_attn\.q_proj/,
    );
  }));
