import assert from "node:assert/strict";
import { decodeWeights, parseConfig } from "./config.ts";
import { loadCheckpoint } from "./safetensors.ts";

const MODEL = new URL("../models/zp-llama-9m", import.meta.url).pathname;
const BASE = {
  hidden_size: 64,
  num_attention_heads: 4,
  intermediate_size: 128,
  num_hidden_layers: 2,
  vocab_size: 100,
};

Deno.test("parseConfig() refuses what the forward pass cannot run: other RoPE types, biases", () => {
  assert.equal(parseConfig(BASE).headDim, 16);
  assert.equal(parseConfig({ ...BASE, rope_scaling: null, attention_bias: false, mlp_bias: false }).nHeads, 4);
  const refused = [
    { rope_scaling: { rope_type: "llama3", factor: 8 } },
    { rope_scaling: { type: "linear", factor: 4 } }, // the older key
    { rope_parameters: { rope_theta: 1e4, rope_type: "yarn" } },
    { attention_bias: true },
    { mlp_bias: true },
    { hidden_act: "gelu" },
  ];
  for (const extra of refused) {
    assert.throws(() => parseConfig({ ...BASE, ...extra }), TypeError, JSON.stringify(extra));
  }
});

Deno.test("decodeWeights() refuses a checkpoint with tensors it would ignore, such as a bias", async () => {
  const ckpt = await loadCheckpoint(MODEL);
  const cfg = parseConfig(ckpt.config);
  assert.equal(decodeWeights(ckpt, cfg).layers.length, cfg.nLayers);
  const q = ckpt.tensors.get("model.layers.0.self_attn.q_proj.weight")!;
  ckpt.tensors.set("model.layers.0.self_attn.q_proj.bias", { ...q, shape: [q.shape[0]!] });
  assert.throws(() => decodeWeights(ckpt, cfg), /self_attn\.q_proj\.bias/);
});

Deno.test("parseConfig() refuses head counts grouped-query attention cannot split", () => {
  assert.throws(() => parseConfig({ ...BASE, num_key_value_heads: 3 }), /num_key_value_heads/);
  assert.throws(() => parseConfig({ ...BASE, num_attention_heads: 0 }), /num_attention_heads/);
  assert.throws(() => parseConfig({ ...BASE, num_hidden_layers: 2.5 }), /num_hidden_layers/);
  assert.throws(() => parseConfig({ ...BASE, head_dim: 15 }), /head_dim/); // RoPE rotates pairs
  assert.equal(parseConfig({ ...BASE, num_key_value_heads: 2 }).nKvHeads, 2);
});

Deno.test("decodeWeights() checks every tensor's shape against config.json and names the one that differs", async () => {
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
