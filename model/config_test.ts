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
