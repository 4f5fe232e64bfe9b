import assert from "node:assert/strict";
import { decodeWeights, LINEAR_NAMES, parseConfig, storedWeightBytes } from "./config.ts";
import { checkWindowLength } from "./llama.ts";
import { loadCheckpoint } from "./safetensors.ts";
import { safetensorsBytes } from "../tests/_safetensors_bytes.ts";

const MODEL = new URL("../models/zp-llama-9m", import.meta.url).pathname;
const BASE = {
  hidden_size: 64,
  num_attention_heads: 4,
  intermediate_size: 128,
  num_hidden_layers: 2,
  vocab_size: 100,
};

/** A Mistral config over BASE: its KV heads given, as MistralConfig's default of 8 does not divide BASE's 4 heads. */
const MISTRAL = { model_type: "mistral", num_key_value_heads: 4 };

/** Llama 3.1's RoPE scaling, as its config.json spells it. */
const LLAMA3 = {
  rope_type: "llama3",
  factor: 8,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

Deno.test("parseConfig() refuses what the forward pass cannot run: other RoPE types, biases, other models", () => {
  assert.equal(parseConfig(BASE).headDim, 16);
  assert.equal(parseConfig({ ...BASE, rope_scaling: null, attention_bias: false, mlp_bias: false }).nHeads, 4);
  // Each of these loads LLaMA-named weights of the right shapes, so only the config tells the forward pass apart.
  const refused: [Record<string, unknown>, RegExp][] = [
    [{ rope_scaling: { rope_type: "llama3", factor: 8 } }, /rope_type llama3 needs low_freq_factor/],
    [{ rope_scaling: { ...LLAMA3, high_freq_factor: 1 } }, /high_freq_factor, over low_freq_factor/],
    [{ rope_scaling: { ...LLAMA3, original_max_position_embeddings: 8192.5 } }, /original_max_position_embeddings/],
    [{ rope_scaling: { type: "linear" } }, /rope_type linear needs factor/], // the older key
    [{ rope_scaling: { type: "linear", factor: 0 } }, /rope_type linear needs factor/],
    [{ rope_scaling: { type: "dynamic" } }, /rope_type dynamic needs factor/],
    // transformers cannot build dynamic RoPE without the length it scales from, nor with a head_dim of 2.
    [{ rope_scaling: { type: "dynamic", factor: 2 }, max_position_embeddings: null }, /dynamic needs max_position_em/],
    [{ rope_parameters: { rope_type: "dynamic", factor: 2 }, head_dim: 2 }, /dynamic needs a head_dim over 2/],
    [{ rope_scaling: { factor: 2 } }, /rope_type/], // scaling without a type
    [{ rope_parameters: { rope_theta: 1e4, rope_type: "yarn", factor: 4 } }, /rope_type yarn/],
    [{ rope_parameters: { rope_theta: 1e4, rope_type: "longrope" } }, /rope_type longrope/],
    // As transformers 5 writes longrope, with its lists of factors: named by its type, not taken for RoPE per layer.
    [
      { rope_parameters: { rope_theta: 1e4, rope_type: "longrope", long_factor: [1, 2], short_factor: [1, 1] } },
      /rope_type longrope is not supported/,
    ],
    [{ partial_rotary_factor: 0.5 }, /partial_rotary_factor 0\.5/],
    [{ rope_parameters: { rope_theta: 1e4, partial_rotary_factor: 0.25 } }, /partial_rotary_factor 0\.25/],
    [{ ...MISTRAL, attention_bias: true }, /attention_bias is not supported for mistral/],
    [{ ...MISTRAL, mlp_bias: true }, /mlp_bias is not supported for mistral/],
    [{ hidden_act: "gelu" }, /hidden_act gelu/],
    [{ model_type: "granite", embedding_multiplier: 12 }, /model_type "granite"/],
    [{ model_type: "smollm3", no_rope_layers: [1, 0] }, /model_type "smollm3"/],
    [{ model_type: "gemma", hidden_act: null }, /model_type "gemma"/],
    [{ model_type: "qwen3_moe" }, /model_type "qwen3_moe"/],
    [{ model_type: "qwen2_moe" }, /model_type "qwen2_moe"/],
    [{ model_type: "qwen2", num_key_value_heads: 2, use_sliding_window: true, sliding_window: 0 }, /sliding_window/],
    [{ quantization_config: { quant_method: "gptq", bits: 4 } }, /quantized/],
    [{ rope_scaling: { rope_type: null, factor: 2 } }, /rope_type/],
    [{ rope_scaling: "linear" }, /rope_type/],
    [{ ...MISTRAL, sliding_window: 0 }, /sliding_window/],
    [{ ...MISTRAL, sliding_window: "4096" }, /sliding_window/],
    [{ max_position_embeddings: 0 }, /max_position_embeddings must be/],
    [{ max_position_embeddings: 2048.5 }, /max_position_embeddings must be/],
    // Each ran to NaN activations, refused only by the server after the dense evaluation.
    [{ rope_theta: -1 }, /rope_theta must be a positive number, got -1/],
    [{ rope_parameters: { rope_type: "default", rope_theta: "1e4" } }, /rope_theta must be a positive number/],
    [{ rope_parameters: { rope_type: "default", rope_theta: 0 } }, /rope_theta must be a positive number/],
    [{ rms_norm_eps: -1e-5 }, /rms_norm_eps must be a number of at least 0/],
    [{ rope_parameters: "default" }, /rope_parameters must be an object/],
    // Disagreeing: which one the file meant is a guess (the model audit's case ran unscaled before).
    [{ rope_parameters: { rope_type: "default" }, rope_scaling: { type: "linear", factor: 4 } }, /disagree/],
    [{ rope_parameters: { rope_theta: 1e4, ...LLAMA3 }, rope_scaling: { ...LLAMA3, factor: 4 } }, /disagree/],
    // Per layer type (Gemma-style): the outer object's missing fields would be read as defaults.
    [{ rope_parameters: { full_attention: { rope_type: "default", rope_theta: 1e6 } } }, /per layer type/],
  ];
  for (const [extra, message] of refused) {
    assert.throws(() => parseConfig({ ...BASE, ...extra }), (e: Error) => {
      assert.ok(e instanceof TypeError, JSON.stringify(extra));
      assert.match(e.message, message, JSON.stringify(extra));
      return true;
    });
  }
});

Deno.test("parseConfig() accepts the spellings of the same forward pass, and RoPE scaling it runs", () => {
  const accepted: Record<string, unknown>[] = [
    { model_type: "llama" },
    { ...MISTRAL, sliding_window: null },
    { hidden_act: "swish" }, // transformers' name for SiLU too
    { hidden_act: null },
    { partial_rotary_factor: 1 },
    { rope_scaling: { rope_type: "default" } },
    { rope_parameters: { rope_theta: 5e5, rope_type: "default", partial_rotary_factor: 1 } },
    { quantization_config: null },
    // null counts as absent, as in the Python client
    { model_type: null, partial_rotary_factor: null, rope_scaling: null, rope_parameters: null },
  ];
  for (const extra of accepted) {
    const cfg = parseConfig({ ...BASE, ...extra });
    assert.equal(cfg.headDim, 16, JSON.stringify(extra));
    assert.equal(cfg.slidingWindow, undefined, JSON.stringify(extra));
  }
  assert.equal(parseConfig({ ...BASE, ...MISTRAL, sliding_window: 512 }).slidingWindow, 512);
  // transformers' MistralConfig defaults the window to 4096; LlamaConfig has none, whatever the file says.
  assert.equal(parseConfig({ ...BASE, ...MISTRAL }).slidingWindow, 4096);
  assert.equal(parseConfig({ ...BASE, ...MISTRAL, sliding_window: 4096.0 }).slidingWindow, 4096);
  assert.equal(parseConfig({ ...BASE, model_type: "llama", sliding_window: 512 }).slidingWindow, undefined);
  assert.equal(parseConfig({ ...BASE, max_position_embeddings: 4096 }).maxPositions, 4096);
  // Left out: transformers' LlamaConfig default, or MistralConfig's; null leaves windows unbounded.
  assert.equal(parseConfig(BASE).maxPositions, 2048);
  assert.equal(parseConfig({ ...BASE, model_type: "llama" }).maxPositions, 2048);
  assert.equal(parseConfig({ ...BASE, ...MISTRAL }).maxPositions, 131072);
  // num_key_value_heads left out: MistralConfig's 8, LlamaConfig's num_attention_heads; null: num_attention_heads.
  const heads32 = { ...BASE, hidden_size: 256, num_attention_heads: 32 };
  assert.equal(parseConfig({ ...heads32, model_type: "mistral" }).nKvHeads, 8);
  assert.equal(parseConfig({ ...heads32, model_type: "mistral", num_key_value_heads: null }).nKvHeads, 32);
  assert.equal(parseConfig({ ...heads32, model_type: "llama" }).nKvHeads, 32);
  assert.equal(parseConfig(heads32).nKvHeads, 32);
  assert.throws(
    () => parseConfig({ ...BASE, model_type: "mistral" }),
    /num_attention_heads 4 is not a multiple of num_key_value_heads 8 \(MistralConfig's default/,
  );
  assert.equal(parseConfig({ ...BASE, max_position_embeddings: null }).maxPositions, undefined);
  assert.equal(parseConfig({ ...BASE, rope_parameters: { rope_theta: 5e5 } }).ropeTheta, 5e5);
  const llama3 = { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };
  assert.deepEqual(parseConfig({ ...BASE, rope_theta: 5e5, rope_scaling: LLAMA3 }).ropeScaling, llama3);
  assert.deepEqual(parseConfig({ ...BASE, rope_parameters: { rope_theta: 5e5, ...LLAMA3 } }).ropeScaling, llama3);
  // A null rope_type in rope_parameters is absent: the type and its fields come from rope_scaling (as in Python).
  const nullType = { ...BASE, rope_parameters: { rope_type: null, rope_theta: 5e5 }, rope_scaling: LLAMA3 };
  assert.deepEqual(parseConfig(nullType).ropeScaling, llama3);
  // The same scaling in both places is that scaling.
  const twice = { ...BASE, rope_parameters: { rope_theta: 5e5, ...LLAMA3 }, rope_scaling: LLAMA3 };
  assert.deepEqual(parseConfig(twice).ropeScaling, llama3);
  // Split between the two, agreeing: the type in one and its fields in the other, or the fields shared out.
  const linear = { type: "linear", factor: 2 };
  const split = {
    rope_parameters: { rope_type: "linear", rope_theta: 1e4 },
    rope_scaling: { type: "linear", factor: 2 },
  };
  assert.deepEqual(parseConfig({ ...BASE, ...split }).ropeScaling, linear);
  const { factor, low_freq_factor, ...rest } = LLAMA3;
  const shared = { rope_parameters: { ...rest, factor }, rope_scaling: { rope_type: "llama3", low_freq_factor } };
  assert.deepEqual(parseConfig({ ...BASE, ...shared }).ropeScaling, llama3);
  assert.deepEqual(parseConfig({ ...BASE, rope_scaling: { type: "linear", factor: 2 } }).ropeScaling, {
    type: "linear",
    factor: 2,
  });
});

Deno.test("parseConfig() gives Qwen2 its biases on q, k and v and Qwen2Config's defaults", () => {
  const qwen2 = { ...BASE, model_type: "qwen2", num_key_value_heads: 2 };
  const qkv = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
  assert.deepEqual(parseConfig(qwen2).biases, qkv);
  // Qwen2Attention and Qwen2MLP take no bias flags: transformers builds the same layers whatever these say.
  assert.deepEqual(parseConfig({ ...qwen2, attention_bias: true, mlp_bias: true }).biases, qkv);
  assert.deepEqual(parseConfig({ ...qwen2, attention_bias: false }).biases, qkv);
  // Left out: Qwen2Config's 32 KV heads and 32768 positions; null KV heads: num_attention_heads.
  const heads32 = { ...BASE, hidden_size: 256, num_attention_heads: 32, model_type: "qwen2" };
  assert.equal(parseConfig({ ...heads32, num_attention_heads: 64, hidden_size: 512 }).nKvHeads, 32);
  assert.equal(parseConfig({ ...heads32, num_key_value_heads: null, num_attention_heads: 8 }).nKvHeads, 8);
  assert.throws(
    () => parseConfig({ ...BASE, model_type: "qwen2" }),
    /num_attention_heads 4 is not a multiple of num_key_value_heads 32 \(Qwen2Config's default/,
  );
  assert.equal(parseConfig(qwen2).maxPositions, 32768);
  assert.deepEqual(parseConfig({ ...heads32 }).defaulted, ["num_key_value_heads", "max_position_embeddings"]);
  // The window counts only with use_sliding_window (4096 when sliding_window is left out); Qwen2.5's configs say false.
  assert.equal(parseConfig({ ...qwen2, sliding_window: 512 }).slidingWindow, undefined);
  assert.equal(parseConfig({ ...qwen2, use_sliding_window: false, sliding_window: 512 }).slidingWindow, undefined);
  assert.equal(parseConfig({ ...qwen2, use_sliding_window: true, sliding_window: 512 }).slidingWindow, 512);
  const defaultWindow = parseConfig({ ...qwen2, use_sliding_window: true, max_position_embeddings: 64 });
  assert.equal(defaultWindow.slidingWindow, 4096);
  assert.deepEqual(defaultWindow.defaulted, ["sliding_window"]);
});

Deno.test("parseConfig() gives Qwen3 its norms of q and k, its attention biases by the flag, and its defaults", () => {
  const qwen3 = { ...BASE, model_type: "qwen3", num_key_value_heads: 2, head_dim: 32 };
  const cfg = parseConfig(qwen3);
  assert.equal(cfg.qkNorm, true);
  assert.equal(parseConfig(BASE).qkNorm, false);
  assert.equal(parseConfig({ ...BASE, model_type: "qwen2", num_key_value_heads: 2 }).qkNorm, false);
  assert.deepEqual(cfg.biases, []);
  // Qwen3Attention takes attention_bias for all four; Qwen3MLP has no bias, whatever mlp_bias says.
  const attention = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"];
  assert.deepEqual(parseConfig({ ...qwen3, attention_bias: true, mlp_bias: true }).biases, attention);
  assert.deepEqual(parseConfig({ ...qwen3, mlp_bias: true }).biases, []);
  // Left out: Qwen3Config's head_dim of 128 (not hidden_size // num_attention_heads), 32 KV heads, 32768 positions.
  assert.equal(parseConfig({ ...qwen3, head_dim: undefined }).headDim, 128);
  assert.equal(cfg.headDim, 32);
  const heads32 = { ...BASE, model_type: "qwen3", hidden_size: 256, num_attention_heads: 32 };
  assert.equal(parseConfig(heads32).nKvHeads, 32);
  assert.deepEqual(parseConfig(heads32).defaulted, ["num_key_value_heads", "max_position_embeddings"]);
  assert.equal(cfg.maxPositions, 32768);
  assert.equal(parseConfig({ ...qwen3, use_sliding_window: true, sliding_window: 256 }).slidingWindow, 256);
  assert.equal(parseConfig({ ...qwen3, sliding_window: 256 }).slidingWindow, undefined);
});

Deno.test("parseConfig() gives LLaMA biases where attention_bias and mlp_bias ask for them, and Mistral none", () => {
  const attention = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"];
  const mlp = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
  assert.deepEqual(parseConfig(BASE).biases, []);
  assert.deepEqual(parseConfig({ ...BASE, attention_bias: false, mlp_bias: false }).biases, []);
  assert.deepEqual(parseConfig({ ...BASE, attention_bias: true }).biases, attention);
  assert.deepEqual(parseConfig({ ...BASE, model_type: "llama", mlp_bias: true }).biases, mlp);
  assert.deepEqual(parseConfig({ ...BASE, attention_bias: true, mlp_bias: true }).biases, [...attention, ...mlp]);
  assert.deepEqual(parseConfig({ ...BASE, ...MISTRAL, attention_bias: false }).biases, []);
});

Deno.test("decodeWeights() reads the biases the config names (any dtype, as float32) and needs every one", async () => {
  const ckpt = await loadCheckpoint(MODEL);
  const cfg = { ...parseConfig(ckpt.config), biases: ["self_attn.k_proj", "mlp.down_proj"] as const };
  const k = ckpt.tensors.get("model.layers.0.self_attn.k_proj.weight")!;
  assert.throws(() => decodeWeights(ckpt, cfg), /has no tensor model\.layers\.0\.self_attn\.k_proj\.bias/);
  // Stored f16, as the checkpoint's matrices: 0.5, -2 and 3 (f16 bits 0x3800, 0xc000, 0x4200), then zeros.
  const f16 = (n: number) => {
    const v = new Uint16Array(n);
    v.set([0x3800, 0xc000, 0x4200]);
    return new Uint8Array(v.buffer);
  };
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}.`;
    ckpt.tensors.set(`${p}self_attn.k_proj.bias`, { ...k, shape: [k.shape[0]!], data: f16(k.shape[0]!) });
    ckpt.tensors.set(`${p}mlp.down_proj.bias`, { ...k, shape: [cfg.dim], data: f16(cfg.dim) });
  }
  const w = decodeWeights(ckpt, cfg);
  assert.deepEqual([...w.layers[1]!.bk!.subarray(0, 4)], [0.5, -2, 3, 0]);
  assert.equal(w.layers[1]!.bk!.length, cfg.nKvHeads * cfg.headDim);
  assert.equal(w.layers[0]!.bDown!.length, cfg.dim);
  assert.equal(w.layers[0]!.bq, undefined);
  // A bias of another length than its layer's rows is another model.
  ckpt.tensors.set("model.layers.1.mlp.down_proj.bias", { ...k, shape: [cfg.dim + 1], data: f16(cfg.dim + 1) });
  assert.throws(() => decodeWeights(ckpt, cfg), /mlp\.down_proj\.bias has shape \[257\], config\.json implies \[256\]/);
});

Deno.test("decodeWeights() refuses a checkpoint with tensors it would ignore, such as a bias", async () => {
  const ckpt = await loadCheckpoint(MODEL);
  const cfg = parseConfig(ckpt.config);
  assert.equal(decodeWeights(ckpt, cfg).layers.length, cfg.nLayers);
  const q = ckpt.tensors.get("model.layers.0.self_attn.q_proj.weight")!;
  ckpt.tensors.set("model.layers.0.self_attn.q_proj.bias", { ...q, shape: [q.shape[0]!] });
  assert.throws(() => decodeWeights(ckpt, cfg), /self_attn\.q_proj\.bias/);
});

Deno.test("decodeWeights() checks the shape of a stored lm_head even when the embeddings are tied", async () => {
  const ckpt = await loadCheckpoint(MODEL);
  const cfg = { ...parseConfig(ckpt.config), tieEmbeddings: true };
  // The bundled model stores lm_head; tied, transformers would tie it to the embedding, as this forward pass does.
  const weights = decodeWeights(ckpt, cfg);
  assert.equal(weights.lmHead, weights.embed);
  const head = ckpt.tensors.get("lm_head.weight")!;
  ckpt.tensors.set("lm_head.weight", { ...head, shape: [head.shape[1]!, head.shape[0]!] });
  assert.throws(() => decodeWeights(ckpt, cfg), /lm_head\.weight has shape \[256, 8192\]/);
});

Deno.test("parseConfig() refuses head counts grouped-query attention cannot split", () => {
  assert.throws(() => parseConfig({ ...BASE, num_key_value_heads: 3 }), /num_key_value_heads/);
  assert.throws(() => parseConfig({ ...BASE, num_attention_heads: 0 }), /num_attention_heads/);
  assert.throws(() => parseConfig({ ...BASE, num_hidden_layers: 2.5 }), /num_hidden_layers/);
  assert.throws(() => parseConfig({ ...BASE, head_dim: 15 }), /head_dim/); // RoPE rotates pairs
  // transformers floors hidden_size / num_attention_heads when head_dim is absent (36 // 8 = 4, q_proj 32 x 36).
  assert.equal(parseConfig({ ...BASE, hidden_size: 36, num_attention_heads: 8 }).headDim, 4);
  assert.throws(
    () => parseConfig({ ...BASE, hidden_size: 6, num_attention_heads: 8 }),
    /head_dim must be a positive integer, got 0 \(hidden_size \/\/ num_attention_heads/,
  );
  assert.equal(parseConfig({ ...BASE, num_key_value_heads: 2 }).nKvHeads, 2);
});

Deno.test("decodeWeights() checks every tensor's shape against config.json, naming the one that differs", async () => {
  const ckpt = await loadCheckpoint(MODEL);
  // The bundled model: dim 256, 4 heads of 64, 2 KV heads, so k_proj is (2 * 64, 256) = (128, 256).
  const wrongKv = parseConfig({ ...ckpt.config, num_key_value_heads: 4 });
  assert.throws(
    () => decodeWeights(ckpt, wrongKv),
    /model\.layers\.0\.self_attn\.k_proj\.weight.*\[128, 256\].*\[256, 256\]/,
  );
  const wrongFfn = parseConfig({ ...ckpt.config, intermediate_size: 512 });
  assert.throws(() => decodeWeights(ckpt, wrongFfn), /model\.layers\.0\.mlp\.gate_proj\.weight/);
  const wrongVocab = parseConfig({ ...ckpt.config, vocab_size: 1000 });
  assert.throws(() => decodeWeights(ckpt, wrongVocab), /model\.embed_tokens\.weight/);
  // A norm stored as a (1, dim) matrix has the right number of elements but not the right shape.
  const cfg = parseConfig(ckpt.config);
  const norm = ckpt.tensors.get("model.norm.weight")!;
  ckpt.tensors.set("model.norm.weight", { ...norm, shape: [1, norm.shape[0]!] });
  assert.throws(() => decodeWeights(ckpt, cfg), /model\.norm\.weight/);
});

Deno.test("parseConfig() runs dynamic RoPE as the default up to max_position_embeddings, as transformers does", () => {
  // original_max_position_embeddings is not read for dynamic by any transformers version: the limit stays 4096.
  const spellings: Record<string, unknown>[] = [
    { rope_scaling: { type: "dynamic", factor: 2 }, max_position_embeddings: 4096 },
    { rope_scaling: { rope_type: "dynamic", factor: 2.0 }, max_position_embeddings: 4096 },
    {
      rope_parameters: { rope_type: "dynamic", rope_theta: 5e5, factor: 8, original_max_position_embeddings: 512 },
      max_position_embeddings: 4096,
    },
  ];
  for (const extra of spellings) {
    const cfg = parseConfig({ ...BASE, ...extra });
    assert.equal(cfg.ropeScaling, undefined, JSON.stringify(extra));
    assert.equal(cfg.maxPositions, 4096, JSON.stringify(extra));
  }
  // Left out, max_position_embeddings is LlamaConfig's 2048, and so is where dynamic RoPE would start to scale.
  assert.equal(parseConfig({ ...BASE, rope_scaling: { type: "dynamic", factor: 2 } }).maxPositions, 2048);
});

Deno.test("checkWindowLength() says when the limit it names is transformers' default, not config.json's", () => {
  const base = { ...BASE, ...MISTRAL };
  const says = /\(transformers' default: config\.json leaves (\w+) out\)/;
  // [config.json, window length, the key named as defaulted (or none), the limit's own words]
  const cases: [Record<string, unknown>, number, string | undefined, RegExp][] = [
    [base, 4097, "sliding_window", /sliding_window of 4096 /],
    [{ ...base, sliding_window: 4096 }, 4097, undefined, /sliding_window of 4096: /],
    [BASE, 2049, "max_position_embeddings", /max_position_embeddings of 2048 /],
    [{ ...BASE, max_position_embeddings: 2048 }, 2049, undefined, /max_position_embeddings of 2048: /],
  ];
  for (const [raw, len, key, limit] of cases) {
    assert.throws(
      () => checkWindowLength(parseConfig(raw), len),
      (e: Error) => limit.test(e.message) && says.exec(e.message)?.[1] === key,
      JSON.stringify(raw),
    );
  }
  assert.deepEqual(
    parseConfig({ ...BASE, model_type: "mistral", hidden_size: 256, num_attention_heads: 32 }).defaulted,
    [
      "num_key_value_heads",
      "sliding_window",
      "max_position_embeddings",
    ],
  );
});

Deno.test("parseConfig() takes LlamaConfig's defaults for rope_theta and rms_norm_eps; an epsilon of 0 is fine", () => {
  // transformers' LlamaConfig: rope_theta 10000.0, rms_norm_eps 1e-6.
  assert.deepEqual([parseConfig(BASE).ropeTheta, parseConfig(BASE).normEps], [10000, 1e-6]);
  assert.equal(parseConfig({ ...BASE, rms_norm_eps: 0 }).normEps, 0);
  assert.equal(parseConfig({ ...BASE, rms_norm_eps: 1e-5, rope_theta: 5e5 }).normEps, 1e-5);
  assert.throws(() => parseConfig({ ...BASE, rms_norm_eps: -1e-6 }), /rms_norm_eps must be a number of at least 0/);
  // 1e400 in config.json parses as Infinity: said as such, not as JSON's null.
  const huge = JSON.parse('{"rope_theta": 1e400, "rms_norm_eps": 1e400}');
  assert.throws(() => parseConfig({ ...BASE, rope_theta: huge.rope_theta }), /rope_theta .* got Infinity$/);
  assert.throws(() => parseConfig({ ...BASE, rms_norm_eps: huge.rms_norm_eps }), /rms_norm_eps .* got Infinity$/);
  const text = { ...BASE, rope_parameters: { rope_theta: "1e4" } };
  assert.throws(() => parseConfig(text), /rope_theta must be a positive number, got "1e4"$/);
  assert.equal(parseConfig({ ...BASE, rope_theta: 1e4, rope_parameters: { rope_theta: 5e5 } }).ropeTheta, 5e5);
});

Deno.test("decodeWeights(): rotary tables are ignored; a 16-bit matrix with a NaN or infinity is decoded", async () => {
  const ckpt = await loadCheckpoint(MODEL);
  const cfg = parseConfig(ckpt.config);
  // Older checkpoints store each block's inverse frequencies, which the forward pass recomputes.
  const q = ckpt.tensors.get("model.layers.0.self_attn.q_proj.weight")!;
  const invFreq = { ...q, name: "model.layers.0.self_attn.rotary_emb.inv_freq", shape: [8], dtype: "f32" as const };
  ckpt.tensors.set(invFreq.name, { ...invFreq, data: new Uint8Array(32) });
  assert.equal(decodeWeights(ckpt, cfg).layers.length, cfg.nLayers);
  // f16 infinity at element 0, then at the last element: kept 16-bit only while finite.
  const bits = new Uint16Array(q.data.buffer, q.data.byteOffset, q.data.byteLength / 2);
  assert.ok(!(decodeWeights(ckpt, cfg, true).layers[0]!.wq instanceof Float32Array), "finite: kept as stored");
  for (const at of [0, bits.length - 1]) {
    const kept = bits[at]!;
    bits[at] = 0x7c00;
    try {
      const wq = decodeWeights(ckpt, cfg, true).layers[0]!.wq;
      assert.ok(wq instanceof Float32Array && wq[at] === Infinity, `infinity at ${at}: decoded`);
    } finally {
      bits[at] = kept;
    }
  }
});

Deno.test("storedWeightBytes() counts each array once, 16-byte aligned: a tied head is the embedding", async () => {
  const ckpt = await loadCheckpoint(MODEL);
  const cfg = parseConfig(ckpt.config);
  for (const [tieEmbeddings, keep16] of [[false, false], [true, false], [true, true]] as const) {
    const w = decodeWeights(ckpt, { ...cfg, tieEmbeddings }, keep16);
    const arrays = new Set([w.embed, w.norm, w.lmHead, ...w.layers.flatMap((b) => Object.values(b))]);
    let want = 0;
    for (const a of arrays) want += Math.ceil((a instanceof Float32Array ? a : a.data).byteLength / 16) * 16;
    assert.equal(storedWeightBytes(w), want, `tied ${tieEmbeddings}, keep16 ${keep16}`);
    assert.equal(arrays.size, 2 + (tieEmbeddings ? 0 : 1) + 9 * cfg.nLayers);
  }
});

Deno.test("parseConfig() refuses RoPE fields and head counts that are no sizes, and lists where objects belong", () => {
  const refused: [Record<string, unknown>, RegExp][] = [
    // transformers divides by each of these: zero would give infinite wavelengths and NaN blends.
    [{ rope_scaling: { ...LLAMA3, original_max_position_embeddings: 0 } }, /original_max_position_embeddings, a pos/],
    [{ rope_scaling: { ...LLAMA3, low_freq_factor: 0 } }, /needs low_freq_factor, a positive number; got 0/],
    [{ rope_scaling: { ...LLAMA3, low_freq_factor: -1 } }, /needs low_freq_factor, a positive number; got -1/],
    // -2 divides 4 heads evenly, and is still no head count.
    [{ num_key_value_heads: -2 }, /num_key_value_heads must be a positive integer, got -2/],
    [{ num_key_value_heads: 2.5 }, /num_key_value_heads must be a positive integer, got 2\.5/],
    // A list is no object of RoPE fields, in either place (read as one, its missing fields would be defaults).
    [{ rope_parameters: [] }, /rope_parameters must be an object, got \[\]/],
    [{ rope_parameters: [1e6] }, /rope_parameters must be an object/],
    [{ rope_parameters: { rope_type: "default" }, rope_scaling: [] }, /disagree/],
    [{ rope_parameters: { rope_theta: 1e4 }, rope_scaling: [] }, /rope_parameters .* and rope_scaling \[\] disagree/],
  ];
  for (const [extra, message] of refused) {
    assert.throws(() => parseConfig({ ...BASE, ...extra }), (e: Error) => {
      assert.ok(e instanceof TypeError, JSON.stringify(extra));
      assert.match(e.message, message, JSON.stringify(extra));
      return true;
    });
  }
});

Deno.test("parseConfig() ties embeddings only for tie_word_embeddings true (LlamaConfig's default: false)", () => {
  assert.equal(parseConfig(BASE).tieEmbeddings, false);
  assert.equal(parseConfig({ ...BASE, tie_word_embeddings: false }).tieEmbeddings, false);
  assert.equal(parseConfig({ ...BASE, tie_word_embeddings: null }).tieEmbeddings, false);
  assert.equal(parseConfig({ ...BASE, tie_word_embeddings: true }).tieEmbeddings, true);
});

/** A one-block model of dim 4 (one head of 4), MLP 4 and vocabulary 4, as config.json gives it. */
const TINY = {
  ...BASE,
  hidden_size: 4,
  num_attention_heads: 1,
  intermediate_size: 4,
  num_hidden_layers: 1,
  vocab_size: 4,
};

/**
 * Writes TINY's tensors in `dtype` into `dir`, every tensor's values 1 + k / 1024 for k = 0, 1, ... (f16 0x3c00 + k;
 * exact in float32 too), with a header of odd length when `odd` (a writer that does not pad leaves one: every tensor's
 * bytes then start at an odd offset of the file).
 */
async function writeTiny(dir: string, dtype: "F16" | "F32", odd: boolean): Promise<void> {
  const blocks = ["input_layernorm", "post_attention_layernorm", ...LINEAR_NAMES];
  const names = [
    "model.embed_tokens.weight",
    "lm_head.weight",
    "model.norm.weight",
    ...blocks.map((n) => `model.layers.0.${n}.weight`),
  ];
  const header: Record<string, unknown> = {};
  const data: number[] = [];
  for (const name of names) {
    const shape = name.includes("norm") ? [4] : [4, 4];
    const n = shape.reduce((a, b) => a * b, 1);
    const begin = data.length;
    for (let k = 0; k < n; k++) {
      const bytes = dtype === "F16"
        ? new Uint8Array(Uint16Array.of(0x3c00 + k).buffer)
        : new Uint8Array(Float32Array.of(1 + k / 1024).buffer);
      data.push(...bytes);
    }
    header[name] = { dtype, shape, data_offsets: [begin, data.length] };
  }
  let json = JSON.stringify(header);
  if ((json.length % 2 === 0) === odd) json += " ";
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(TINY));
  await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(json, new Uint8Array(data)));
}

Deno.test("decodeWeights() keeps a 16-bit matrix at an odd byte offset (odd-length header) as a copy", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTiny(dir, "F16", true);
    const ckpt = await loadCheckpoint(dir);
    const cfg = parseConfig(ckpt.config);
    const q = ckpt.tensors.get("model.layers.0.self_attn.q_proj.weight")!;
    assert.equal(q.data.byteOffset % 2, 1, "the test's premise: stored at an odd offset");
    const w = decodeWeights(ckpt, cfg, true);
    const wq = w.layers[0]!.wq;
    assert.ok(!(wq instanceof Float32Array), "kept 16-bit");
    assert.deepEqual(Array.from(wq.data), Array.from({ length: 16 }, (_, k) => 0x3c00 + k));
    assert.equal(w.layers[0]!.attnNorm[1], 1 + 1 / 1024);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test('decodeWeights(): float32 matrices stay float32 under keep16; keep16 "bf16" decodes f16 ones', async () => {
  const dir = await Deno.makeTempDir();
  try {
    const values = Array.from({ length: 16 }, (_, k) => 1 + k / 1024);
    for (const [dtype, keep16] of [["F32", true], ["F32", "bf16"], ["F16", "bf16"], ["F16", false]] as const) {
      await writeTiny(dir, dtype, false);
      const ckpt = await loadCheckpoint(dir);
      const w = decodeWeights(ckpt, parseConfig(ckpt.config), keep16);
      for (const m of [w.embed, w.lmHead, w.layers[0]!.wq, w.layers[0]!.wDown]) {
        assert.ok(m instanceof Float32Array, `${dtype}, keep16 ${keep16}`);
        assert.deepEqual(Array.from(m), values, `${dtype}, keep16 ${keep16}`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
