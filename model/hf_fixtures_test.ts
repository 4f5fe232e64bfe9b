import assert from "node:assert/strict";
import { LlamaRunner, loadModel } from "./mod.ts";

/**
 * Tiny Hugging Face LLaMA, Qwen2 and Qwen3 checkpoints whose logits and perplexity were computed by a float64 torch
 * transcription of transformers' LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM
 * (tests/fixtures/hf_llama/make_fixtures.py, which shares no code with model/): head_dim derived as hidden_size //
 * num_attention_heads where they do not divide, grouped-query and one-KV-head attention, tied and untied embeddings,
 * linear, llama3 and dynamic RoPE scaling, Qwen2's biases on q, k and v, LLaMA's attention_bias and mlp_bias, Qwen3's
 * norms of q and k, f32, bf16, f16 and sharded checkpoints.
 */
const FIXTURES = new URL("../tests/fixtures/hf_llama/", import.meta.url).pathname;

interface Expected {
  seqLen: number;
  ids: number[][];
  ppl: number;
  logits: number[][];
}

const NAMES = [
  "headdim-floor-gqa-tied-bf16",
  "llama3-headdim-mqa-f16-sharded",
  "ntk-dynamic-default-maxpos-f32",
  "qwen2-qkv-bias-gqa-tied-bf16",
  "untied-llama-attention-mlp-bias-f16",
  "wide-head-qwen3-qk-norm-tied-f32",
];
for (const name of NAMES) {
  Deno.test(`LlamaRunner on ${name} matches transformers' forward pass (float64 torch reference)`, async () => {
    const dir = FIXTURES + name;
    const want = JSON.parse(await Deno.readTextFile(`${dir}/expected.json`)) as Expected;
    const T = want.seqLen;
    const m = await loadModel(dir, { seqLen: T });
    const runner = new LlamaRunner(m.cfg, m.weights, { seqLen: T });
    const V = m.cfg.vocabSize;
    // float32 against float64 on logits of magnitude ~1-10: a few 1e-6 apart; a wrong head_dim, RoPE frequency or
    // key/value head mapping moves them by 1e-2 and more.
    const logits = runner.forward(want.ids[0]!);
    let worst = 0;
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < V; j++) worst = Math.max(worst, Math.abs(logits[t * V + j]! - want.logits[t]![j]!));
    }
    assert.ok(worst < 1e-4, `largest logit difference ${worst}`);
    let loss = 0;
    for (const ids of want.ids) loss += runner.windowLoss(ids);
    const ppl = Math.exp(loss / (want.ids.length * (T - 1)));
    assert.ok(Math.abs(ppl / want.ppl - 1) < 1e-5, `perplexity ${ppl} vs ${want.ppl}`);
  });
}

Deno.test("the dynamic-RoPE fixture (no max_position_embeddings) takes windows up to LlamaConfig's 2048", async () => {
  // Past 2048 tokens transformers would rescale the frequencies (dynamic_rope_update); up to it they are the default.
  const dir = FIXTURES + "ntk-dynamic-default-maxpos-f32";
  await assert.rejects(
    () => loadModel(dir, { seqLen: 2049 }),
    /2049 tokens .*max_position_embeddings of 2048 \(transformers' default: config\.json leaves max_position_embed/,
  );
  assert.equal((await loadModel(dir, { seqLen: 2048 })).cfg.maxPositions, 2048);
});
