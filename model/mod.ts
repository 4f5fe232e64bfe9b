/**
 * Load, run, prune and write Hugging Face LLaMA-family checkpoints: the public surface of model/.
 */
import { type Checkpoint, loadCheckpoint } from "./safetensors.ts";
import { decodeWeights, type LlamaConfig, type LlamaWeights, parseConfig } from "./config.ts";

export * from "./safetensors.ts";
export * from "./config.ts";
export * from "./llama.ts";
export * from "./pool.ts";
export * from "./tokenizer.ts";
export * from "./sequential.ts";

/** A checkpoint with its parsed config and float32 weights. */
export interface LoadedModel {
  ckpt: Checkpoint;
  cfg: LlamaConfig;
  weights: LlamaWeights;
}

/** Reads a checkpoint directory and decodes its weights to float32. */
export async function loadModel(dir: string): Promise<LoadedModel> {
  const ckpt = await loadCheckpoint(dir);
  const cfg = parseConfig(ckpt.config);
  return { ckpt, cfg, weights: decodeWeights(ckpt, cfg) };
}
