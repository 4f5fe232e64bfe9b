/**
 * Load, run, prune and write Hugging Face LLaMA-family checkpoints: the public surface of model/.
 */
import { type Checkpoint, loadCheckpoint, readConfigJson, storedShare } from "./safetensors.ts";
import { decodeWeights, type LlamaConfig, type LlamaWeights, parseConfig, storedWeightBytes } from "./config.ts";
import { checkArenaFits, checkWindowLength, runnerArenaSize } from "./llama.ts";
import { ARENA_MAX_BYTES } from "./ops.ts";

export * from "./safetensors.ts";
export * from "./config.ts";
export * from "./llama.ts";
export * from "./pool.ts";
export * from "./tokenizer.ts";
export * from "./windows.ts";
export * from "./text_file.ts";
export * from "./json_file.ts";
export * from "./sequential.ts";
export * from "./layer_rule.ts";

/** A checkpoint with its parsed config and its weights (16-bit ones kept as stored are views of `ckpt`'s bytes). */
export interface LoadedModel {
  ckpt: Checkpoint;
  cfg: LlamaConfig;
  weights: LlamaWeights;
}

/** How `loadModel` keeps a checkpoint's weight matrices. */
export interface LoadOptions {
  /** Tokens per window the model will run (0: no check of the arena's run state or of the model's window limits). */
  seqLen?: number;
  /**
   * Calibration tokens one runner may cache, when known: counted in choosing how to keep f16 weights ("auto"). (The
   * forward pool checks the cache it splits between its workers.)
   */
  cacheTokens?: number;
  /**
   * 16-bit matrices (bf16 or f16) kept as stored rather than decoded to float32: the same products, half the memory.
   * "auto" (the default) keeps bf16 ones, which matmul reads as fast, and f16 ones only where float32 would not fit
   * the 4 GiB arena (their widening makes matmul 1.1 to 1.4 times slower); true keeps every 16-bit one; false none.
   */
  keep16?: boolean | "auto";
}

/**
 * Reads a checkpoint directory and decodes its weights. Refuses, before reading any weights, a model whose forward
 * pass cannot fit WebAssembly's 4 GiB memory with its weights in the dtypes its shards' headers give (16-bit ones as
 * stored, unless `keep16` is false), or whose sliding window or `max_position_embeddings` windows of `opts.seqLen`
 * tokens (when given) exceed; and, once read, one that does not fit as it is kept.
 */
export async function loadModel(dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const config = await readConfigJson(dir);
  const cfg = parseConfig(config);
  const run = { seqLen: opts.seqLen ?? 0 };
  // Shards of a model this large take minutes to read, only to fail when the workers start. The bound before reading
  // takes the dtypes the shards' headers give (16-bit matrices may be kept as stored), else the one config.json
  // states, else the smallest the weights could be stored in.
  const declared = config.torch_dtype ?? config.dtype, f32Bytes = runnerArenaSize(cfg, run).weights;
  const share = opts.keep16 === false ? 1 : await storedShare(dir) ?? (declared === "float32" ? 1 : 0.5);
  // A window past the model's positions is refused as such first: its run state may not fit the arena either, but a
  // shorter window is the way out, not a smaller model.
  checkWindowLength(cfg, opts.seqLen ?? 0);
  checkArenaFits(cfg, run, `model ${dir}`, f32Bytes * share);
  const ckpt = await loadCheckpoint(dir, config);
  const mode = opts.keep16 ?? "auto";
  const keep16 = mode !== "auto"
    ? mode
    : runnerArenaSize(cfg, { ...run, cacheTokens: opts.cacheTokens }).total > ARENA_MAX_BYTES || "bf16";
  const weights = decodeWeights(ckpt, cfg, keep16);
  checkArenaFits(cfg, run, `model ${dir}`, storedWeightBytes(weights));
  return { ckpt, cfg, weights };
}
