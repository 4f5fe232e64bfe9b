import assert from "node:assert/strict";
import { Arena, matmul, widenRow } from "./ops.ts";
import { bf16Bits } from "../contract/dtype_codec.ts";
import {
  decodeToF32,
  decodeWeights,
  emptyStats,
  ForwardPool,
  LINEAR_FIELD,
  LlamaRunner,
  loadModel,
  perplexity,
  readU16,
  runnerArenaSize,
  storedWeightBytes,
} from "./mod.ts";

const root = (p: string) => new URL(`../${p}`, import.meta.url).pathname;
const REFERENCE = JSON.parse(await Deno.readTextFile(root("models/zp-llama-9m/reference.json")));

Deno.test("matmul() SIMD path agrees with a float64 dot product, including row and column tails", () => {
  const T = 7, n = 12, d = 10; // T % 3 and d % 4 exercise both tails
  const arena = new Arena(1 << 16);
  const x = arena.f32(T * n), w = arena.f32(d * n), out = arena.f32(T * d);
  x.forEach((_, i) => (x[i] = Math.sin(i)));
  w.forEach((_, i) => (w[i] = Math.cos(3 * i)));
  matmul(out, x, w, T, n, d);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += x[t * n + i]! * w[j * n + i]!;
      assert.ok(Math.abs(out[t * d + j]! - s) < 1e-5, `(${t}, ${j}): ${out[t * d + j]} vs ${s}`);
    }
  }
});

Deno.test("perplexity() of the dense bundled model on 64 windows matches reference.json within 0.5%", async () => {
  const m = await loadModel(root("models/zp-llama-9m"));
  const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: 256 });
  try {
    const r = await perplexity(pool, await readU16(root("data/corpus/test_ids.u16")), 64);
    const want = REFERENCE.dense_ppl[1] as number; // 37.2188, measured with PyTorch
    assert.equal(r.windows, 64);
    assert.ok(Math.abs(r.ppl / want - 1) < 0.005, `dense ppl ${r.ppl} vs reference ${want}`);
  } finally {
    pool.close();
  }
});

Deno.test("LlamaRunner.maskLinear() zeroes just the weights whose mask bits are set, float32 or 16-bit", async () => {
  for (const keep16 of [false, true]) {
    const m = await loadModel(root("models/zp-llama-9m"), { keep16 });
    const runner = new LlamaRunner(m.cfg, m.weights, { seqLen: 8 });
    const w = runner.w.layers[2]![LINEAR_FIELD["mlp.up_proj"]];
    assert.equal(w instanceof Float32Array, !keep16, "kept as asked (the bundled model is f16)");
    const values = () => {
      if (w instanceof Float32Array) return Float32Array.from(w);
      const out = new Float32Array(w.data.length);
      widenRow(out, w, 0, out.length);
      return out;
    };
    const before = values();
    // Lowest bit first within each byte; a pattern that differs from byte to byte. (Tail bits past the element count
    // are covered by client/mod_test.ts: maskLinear and applyMask share zeroMasked.)
    const mask = Uint8Array.from({ length: Math.ceil(before.length / 8) }, (_, b) => (b * 37 + 11) & 0xff);
    runner.maskLinear(2, "mlp.up_proj", mask);
    const after = values();
    let zeroed = 0;
    for (let i = 0; i < after.length; i++) {
      const bit = (mask[i >> 3]! >> (i & 7)) & 1;
      if (bit) zeroed++;
      if (!Object.is(after[i], bit ? 0 : before[i])) {
        assert.fail(`weight ${i}: ${after[i]} (bit ${bit}, was ${before[i]})`);
      }
    }
    assert.ok(zeroed > after.length / 3 && zeroed < after.length * 2 / 3, `${zeroed} of ${after.length}`);
    assert.throws(() => runner.maskLinear(2, "mlp.up_proj", mask.subarray(1)), RangeError);
  }
});

Deno.test("16-bit weights as stored give float32's logits, statistics and losses, bit for bit", async () => {
  const wide = await loadModel(root("models/zp-llama-9m"), { keep16: false });
  const kept = await loadModel(root("models/zp-llama-9m"), { keep16: true });
  const T = 37; // not a multiple of 3: both matmul kernels run
  const tokens = Array.from({ length: 2 * T }, (_, i) => (i * 97 + 5) % wide.cfg.vocabSize);
  const run = (m: typeof wide) => {
    const runner = new LlamaRunner(m.cfg, m.weights, { seqLen: T, cacheTokens: 2 * T });
    const logits = Float32Array.from(runner.forward(tokens.slice(0, T)));
    runner.cacheEmbed(tokens, 2);
    const stats = emptyStats(m.cfg);
    runner.cacheBlock(0, stats);
    const n = m.cfg.dim * m.cfg.hiddenDim;
    runner.maskLinear(0, "mlp.down_proj", Uint8Array.from({ length: n / 8 }, (_, b) => (b * 29) & 0xff));
    runner.cacheBlock(0);
    runner.cacheBlock(1, stats);
    return { logits, stats };
  };
  const a = run(wide), b = run(kept);
  assert.deepEqual(new Uint32Array(b.logits.buffer), new Uint32Array(a.logits.buffer));
  assert.deepEqual(b.stats, a.stats);
  // The 16-bit arena holds the matrices in half the bytes: the point of keeping them.
  assert.ok(storedWeightBytes(kept.weights) < 0.55 * storedWeightBytes(wide.weights));
  // Through the worker pool (the weights cloned to each worker): the same losses, window by window.
  const ids = await readU16(root("data/corpus/test_ids.u16"));
  const losses = async (m: typeof wide) => {
    const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: 64, workers: 2 });
    try {
      return (await perplexity(pool, ids, 4)).losses;
    } finally {
      pool.close();
    }
  };
  assert.deepEqual(await losses(kept), await losses(wide));
});

Deno.test('decodeWeights() with keep16 "bf16" keeps bf16 matrices as stored and decodes the others', async () => {
  const m = await loadModel(root("models/zp-llama-9m"), { keep16: false });
  // One matrix re-encoded as bf16 (its f16 values rounded): a checkpoint of mixed dtypes.
  const t = m.ckpt.tensors.get("model.layers.0.self_attn.q_proj.weight")!;
  const values = decodeToF32(t.data, t.dtype);
  const bf = new Uint16Array(values.length);
  values.forEach((v, i) => (bf[i] = bf16Bits(v)));
  m.ckpt.tensors.set(t.name, { ...t, dtype: "bf16", data: new Uint8Array(bf.buffer) });
  const w = decodeWeights(m.ckpt, m.cfg, "bf16");
  const wq = w.layers[0]!.wq;
  assert.ok(!(wq instanceof Float32Array) && wq.dtype === "bf16" && wq.data[5] === bf[5], "the bf16 matrix is kept");
  assert.ok(w.layers[0]!.wk instanceof Float32Array && w.embed instanceof Float32Array, "f16 ones are decoded");
  // Both ways, the same forward pass.
  const tokens = Array.from({ length: 16 }, (_, i) => (i * 31 + 7) % m.cfg.vocabSize);
  const wide = decodeWeights(m.ckpt, m.cfg, false);
  const run = (weights: typeof w) => Float32Array.from(new LlamaRunner(m.cfg, weights, { seqLen: 16 }).forward(tokens));
  assert.deepEqual(run(w), run(wide));
});

Deno.test("LlamaRunner applies the config's RoPE scaling: linear x1 changes nothing, x2 the logits", async () => {
  const m = await loadModel(root("models/zp-llama-9m"));
  const tokens = Array.from({ length: 32 }, (_, i) => (i * 97 + 5) % m.cfg.vocabSize);
  const logits = (cfg: typeof m.cfg) =>
    Float32Array.from(new LlamaRunner(cfg, m.weights, { seqLen: 32 }).forward(tokens));
  const plain = logits(m.cfg);
  assert.deepEqual(logits({ ...m.cfg, ropeScaling: { type: "linear", factor: 1 } }), plain);
  const stretched = logits({ ...m.cfg, ropeScaling: { type: "linear", factor: 2 } });
  const V = m.cfg.vocabSize;
  // Position 0 has angle 0 whatever the scaling; every later position sees other rotations.
  assert.deepEqual(stretched.subarray(0, V), plain.subarray(0, V));
  assert.notDeepEqual(stretched.subarray(V), plain.subarray(V));
});

Deno.test("block statistics are each linear's input: doubling the weight before one quadruples it alone", async () => {
  const m = await loadModel(root("models/zp-llama-9m"), { keep16: false });
  const T = 16, windows = 2;
  const tokens = Array.from({ length: windows * T }, (_, i) => (i * 89 + 3) % m.cfg.vocabSize);
  const statsWith = (change?: { field: "attnNorm" | "wv" | "ffnNorm" | "wUp" | "wGate"; by: number }) => {
    const layers = m.weights.layers.slice();
    if (change) {
      const w = layers[0]![change.field] as Float32Array;
      layers[0] = { ...layers[0]!, [change.field]: w.map((v) => change.by * v) };
    }
    const runner = new LlamaRunner(m.cfg, { ...m.weights, layers }, { seqLen: T, cacheTokens: windows * T });
    runner.cacheEmbed(tokens, windows);
    const stats = emptyStats(m.cfg);
    runner.cacheBlock(0, stats);
    return stats;
  };
  const base = statsWith();
  const x4 = (a: Float64Array) => a.map((v) => 4 * v);
  // Multiplying by 2 is exact in floating point, through every product and sum up to the statistic: x4 exactly.
  // input_layernorm's weight scales q/k/v's input; the attention output that feeds o_proj changes too (its scores do).
  assert.deepEqual(statsWith({ field: "attnNorm", by: 2 }).attnIn, x4(base.attnIn));
  // v_proj's weight scales the attention output (the softmax weights are unchanged), o_proj's input, only.
  const v = statsWith({ field: "wv", by: 2 });
  assert.deepEqual([v.attnIn, v.oIn], [base.attnIn, x4(base.oIn)]);
  // post_attention_layernorm's weight scales gate/up's input, after the attention's statistics.
  const ffn = statsWith({ field: "ffnNorm", by: 2 });
  assert.deepEqual([ffn.attnIn, ffn.oIn, ffn.mlpIn], [base.attnIn, base.oIn, x4(base.mlpIn)]);
  // up_proj's weight scales silu(gate) * up, down_proj's input.
  const up = statsWith({ field: "wUp", by: 2 });
  assert.deepEqual([up.attnIn, up.oIn, up.mlpIn, up.downIn], [base.attnIn, base.oIn, base.mlpIn, x4(base.downIn)]);
  // gate_proj zeroed: silu(0) = 0, so down_proj's input is 0 whatever up_proj gives.
  const gate = statsWith({ field: "wGate", by: 0 });
  assert.deepEqual([gate.mlpIn, gate.downIn], [base.mlpIn, new Float64Array(m.cfg.hiddenDim)]);
  assert.ok(base.downIn.every((s) => s > 0) && base.mlpIn.every((s) => s > 0));
});

Deno.test("runnerArenaSize() counts every float32 weight a model decodes to, biases and q/k norms too", async () => {
  const fixtures = root("tests/fixtures/hf_llama/");
  const names = [
    "qwen2-qkv-bias-gqa-tied-bf16",
    "untied-llama-attention-mlp-bias-f16",
    "wide-head-qwen3-qk-norm-tied-f32",
  ];
  for (const dir of [root("models/zp-llama-9m"), ...names.map((n) => fixtures + n)]) {
    const m = await loadModel(dir, { keep16: false });
    // The decoded arrays themselves, each once (a tied head is the embedding).
    const arrays = new Set<Float32Array>([m.weights.embed, m.weights.norm, m.weights.lmHead] as Float32Array[]);
    for (const b of m.weights.layers) for (const a of Object.values(b)) arrays.add(a as Float32Array);
    const bytes = [...arrays].reduce((n, a) => n + a.byteLength, 0);
    assert.equal(runnerArenaSize(m.cfg, { seqLen: 0 }).weights, bytes, dir);
  }
});

Deno.test("LlamaRunner refuses a token id past the vocabulary and more windows than its cache holds", async () => {
  const m = await loadModel(root("models/zp-llama-9m"));
  const T = 8, V = m.cfg.vocabSize;
  const runner = new LlamaRunner(m.cfg, m.weights, { seqLen: T, cacheTokens: T });
  const ids = Array.from({ length: 2 * T }, (_, i) => i + 1);
  runner.forward(ids.slice(0, T).map((_, i) => (i === 3 ? V - 1 : i)));
  assert.throws(
    () => runner.forward(ids.slice(0, T).map((_, i) => (i === 3 ? V : i))),
    new RegExp(`token id ${V} outside`),
  );
  assert.throws(() => runner.forward(ids.slice(0, T).map((_, i) => (i === 3 ? -1 : i))), /token id -1 outside/);
  runner.cacheEmbed(ids, 1);
  assert.throws(() => runner.cacheEmbed(ids, 2), /^RangeError: cache holds fewer than 2 windows$/);
});
