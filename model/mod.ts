/**
 * Load, run, prune and write Hugging Face LLaMA-family checkpoints: the public surface of model/.
 */
import { type Checkpoint, loadCheckpoint, readConfigJson } from "./safetensors.ts";
import { decodeWeights, type LlamaConfig, type LlamaWeights, parseConfig } from "./config.ts";
import { checkArenaFits, checkWindowLength } from "./llama.ts";

export * from "./safetensors.ts";
export * from "./config.ts";
export * from "./llama.ts";
export * from "./pool.ts";
export * from "./tokenizer.ts";
export * from "./windows.ts";
export * from "./text_file.ts";
export * from "./json_file.ts";
export * from "./sequential.ts";

/** A checkpoint with its parsed config and float32 weights. */
export interface LoadedModel {
  ckpt: Checkpoint;
  cfg: LlamaConfig;
  weights: LlamaWeights;
}

/**
 * Reads a checkpoint directory and decodes its weights to float32. Refuses, before reading any weights, a model
 * whose forward pass cannot fit WebAssembly's 4 GiB memory, or whose sliding window or `max_position_embeddings`
 * windows of `opts.seqLen` tokens (when given) exceed.
 */
export async function loadModel(dir: string, opts: { seqLen?: number } = {}): Promise<LoadedModel> {
  const config = await readConfigJson(dir);
  const cfg = parseConfig(config);
  // Shards of a model this large take minutes to read, only to fail when the workers start.
  checkArenaFits(cfg, { seqLen: opts.seqLen ?? 0 }, `model ${dir}`);
  checkWindowLength(cfg, opts.seqLen ?? 0);
  const ckpt = await loadCheckpoint(dir, config);
  return { ckpt, cfg, weights: decodeWeights(ckpt, cfg) };
}
