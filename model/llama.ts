/**
 * The LLaMA forward pass in float32, llama2.c style: weights and run-state live in one `Arena` (so `matmul`
 * takes its SIMD path) and `block()` reads like the paper. A runner processes one whole window at a time,
 * and can keep the hidden states of calibration windows between blocks for sequential pruning.
 */
import type { BlockWeights, LinearName, LlamaConfig, LlamaWeights } from "./config.ts";
import { LINEAR_BIAS, LINEAR_FIELD, linearShape, storedWeightBytes } from "./config.ts";
import {
  accum,
  addBias,
  Arena,
  ARENA_MAX_BYTES,
  attention,
  type AttentionScratch,
  matmul,
  rmsnorm,
  rope,
  ropeTables,
  sumSquares,
  swiglu,
  type WeightMatrix,
  widenRow,
} from "./ops.ts";
import { zeroMasked } from "../contract/dtype_codec.ts";

/** Per-block calibration sums of x_j² for the four distinct inputs of the seven linear layers. */
export interface BlockStats {
  /** Input of q, k and v (after input_layernorm). (dim) */
  attnIn: Float64Array;
  /** Input of o_proj (the attention output). (nHeads * headDim) */
  oIn: Float64Array;
  /** Input of gate and up (after post_attention_layernorm). (dim) */
  mlpIn: Float64Array;
  /** Input of down_proj (silu(gate) * up). (hiddenDim) */
  downIn: Float64Array;
}

/** Zeroed statistics for one block. */
export function emptyStats(cfg: LlamaConfig): BlockStats {
  return {
    attnIn: new Float64Array(cfg.dim),
    oIn: new Float64Array(cfg.nHeads * cfg.headDim),
    mlpIn: new Float64Array(cfg.dim),
    downIn: new Float64Array(cfg.hiddenDim),
  };
}

/** Which statistic feeds each linear layer. */
export const STATS_OF: Record<LinearName, keyof BlockStats> = {
  "self_attn.q_proj": "attnIn",
  "self_attn.k_proj": "attnIn",
  "self_attn.v_proj": "attnIn",
  "self_attn.o_proj": "oIn",
  "mlp.gate_proj": "mlpIn",
  "mlp.up_proj": "mlpIn",
  "mlp.down_proj": "downIn",
};

/** Scratch buffers for one window of up to T tokens. */
interface RunState extends AttentionScratch {
  x: Float32Array; // (T, dim) the residual stream
  xb: Float32Array; // (T, dim) normed input of a sub-block
  xb2: Float32Array; // (T, dim) output of a sub-block
  q: Float32Array; // (T, nHeads * headDim)
  k: Float32Array; // (T, nKvHeads * headDim)
  v: Float32Array; // (T, nKvHeads * headDim)
  attOut: Float32Array; // (T, nHeads * headDim)
  hb: Float32Array; // (T, hiddenDim)
  hb2: Float32Array; // (T, hiddenDim)
  logits: Float32Array; // (T, vocab)
  cos: Float32Array; // (T, headDim / 2)
  sin: Float32Array; // (T, headDim / 2)
}

/** Options of a runner: the window length and how many calibration tokens it may cache. */
export interface RunnerOptions {
  seqLen: number;
  cacheTokens?: number;
}

/** The bytes of a runner's arena, by what they hold. */
export interface ArenaSize {
  /** Weights, float32 or 16-bit as the runner keeps them (the embedding once when tied). */
  weights: number;
  /** Scratch for one window of seqLen tokens. */
  state: number;
  /** Hidden states of the cached calibration tokens. */
  cache: number;
  /** All three plus alignment slack: what the arena reserves. */
  total: number;
}

/**
 * The arena a `LlamaRunner` of `cfg` reserves for `opts`; `tied` when lm_head is the embedding. `weightBytes`: the
 * bytes its weights take (`storedWeightBytes`), by default those of float32 weights.
 */
export function runnerArenaSize(
  cfg: LlamaConfig,
  opts: RunnerOptions,
  tied = cfg.tieEmbeddings,
  weightBytes?: number,
): ArenaSize {
  const { dim, hiddenDim, nLayers, vocabSize, headDim } = cfg, T = opts.seqLen;
  const qDim = cfg.nHeads * headDim, kvDim = cfg.nKvHeads * headDim;
  const biases = cfg.biases.reduce((n, name) => n + linearShape(cfg, name)[0], 0);
  const qkNorms = cfg.qkNorm ? 2 * headDim : 0;
  const perBlock = 2 * dim + qDim * dim + 2 * kvDim * dim + dim * qDim + 3 * hiddenDim * dim + biases + qkNorms;
  const weights = weightBytes ?? 4 * (vocabSize * dim * (tied ? 1 : 2) + dim + nLayers * perBlock);
  const state = 4 * (T * (3 * dim + 2 * qDim + 2 * kvDim + 2 * hiddenDim + vocabSize + T + 4 * headDim) + T * headDim);
  const cache = 4 * (opts.cacheTokens ?? 0) * dim;
  // 16 bytes of alignment slack per array.
  return { weights, state, cache, total: weights + state + cache + 16 * (16 * nLayers + 64) };
}

/**
 * Throws a RangeError when a runner's arena for `opts` would not fit WebAssembly's 4 GiB memory, before anything
 * large is read or allocated. `subject` opens the message ("model models/x", "each forward worker").
 */
export function checkArenaFits(cfg: LlamaConfig, opts: RunnerOptions, subject: string, weightBytes?: number): void {
  const size = runnerArenaSize(cfg, opts, cfg.tieEmbeddings, weightBytes);
  if (size.total <= ARENA_MAX_BYTES) return;
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const f32 = runnerArenaSize(cfg, opts).weights;
  const kind = size.weights >= f32 ? "float32" : size.weights < 0.55 * f32 ? "16-bit" : "partly 16-bit";
  const parts = [`${kind} weights ${gib(size.weights)}`];
  if (opts.seqLen > 0) parts.push(`run state for windows of ${opts.seqLen} tokens ${gib(size.state)}`);
  if (size.cache > 0) parts.push(`cache of ${opts.cacheTokens} calibration tokens ${gib(size.cache)}`);
  // Where the calibration cache is what does not fit, the way out is fewer or shorter windows, not another model.
  const fewer = size.cache > 0 && size.total - size.cache <= ARENA_MAX_BYTES
    ? `; fewer or shorter calibration windows would fit (at most ${
      Math.floor((ARENA_MAX_BYTES - (size.total - size.cache)) / (4 * cfg.dim))
    } tokens)`
    : "";
  throw new RangeError(
    `${subject} needs a ${gib(size.total)} arena (${parts.join(", ")}), more than the 4 GiB a WebAssembly ` +
      `memory can hold (weights alone fill it at about 1.07B parameters in float32, 2.1B in bf16 or f16)${fewer}`,
  );
}

/**
 * Throws a RangeError when windows of `seqLen` tokens are longer than the model's sliding attention window (this
 * forward pass attends to every earlier token of a window, which equals Mistral's only up to that length) or than
 * its `max_position_embeddings` (positions it was never trained on: its activations there would calibrate the
 * pruning, and its perplexity there measure it, on inputs the model is not used with; and past which transformers'
 * `dynamic` RoPE, run here as the default one, would rescale its frequencies).
 */
export function checkWindowLength(cfg: LlamaConfig, seqLen: number): void {
  const flag = "(the CLI's --seqlen sets the window length)";
  // A limit config.json does not state is transformers' default: said so, else its figure seems to come from nowhere.
  const from = (key: string) =>
    cfg.defaulted.includes(key) ? ` (transformers' default: config.json leaves ${key} out)` : "";
  if (cfg.slidingWindow !== undefined && seqLen > cfg.slidingWindow) {
    throw new RangeError(
      `windows of ${seqLen} tokens are longer than the model's sliding_window of ${cfg.slidingWindow}` +
        `${from("sliding_window")}: this forward pass has no sliding-window attention ${flag}`,
    );
  }
  if (cfg.maxPositions !== undefined && seqLen > cfg.maxPositions) {
    throw new RangeError(
      `windows of ${seqLen} tokens are longer than the model's max_position_embeddings of ${cfg.maxPositions}` +
        `${from("max_position_embeddings")}: it was not trained on positions past it ${flag}`,
    );
  }
}

/** Holds a model's float32 weights and scratch in one arena and runs whole windows through it. */
export class LlamaRunner {
  readonly cfg: LlamaConfig;
  readonly w: LlamaWeights;
  readonly T: number;
  readonly #s: RunState;
  /** Hidden states of cached calibration windows, (windows, T, dim). */
  #cache: Float32Array;
  #cachedWindows = 0;

  /** Copies `weights` into a fresh arena sized for windows of `seqLen` tokens and an optional cache. */
  constructor(cfg: LlamaConfig, weights: LlamaWeights, opts: RunnerOptions) {
    checkWindowLength(cfg, opts.seqLen);
    this.cfg = cfg;
    const T = (this.T = opts.seqLen);
    const { dim, hiddenDim, vocabSize, headDim } = cfg;
    const qDim = cfg.nHeads * headDim, kvDim = cfg.nKvHeads * headDim;
    const tied = weights.lmHead === weights.embed;
    const size = runnerArenaSize(cfg, opts, tied, storedWeightBytes(weights));
    const arena = new Arena(size.total);
    const copy = (src: Float32Array): Float32Array => {
      const dst = arena.f32(src.length);
      dst.set(src);
      return dst;
    };
    // A matrix stays in the form it came in: float32, or 16-bit floats that matmul widens as it reads them.
    const copyMatrix = (src: WeightMatrix): WeightMatrix => {
      if (src instanceof Float32Array) return copy(src);
      const data = arena.u16(src.data.length);
      data.set(src.data);
      return { dtype: src.dtype, data };
    };
    const embed = copyMatrix(weights.embed);
    this.w = {
      embed,
      layers: weights.layers.map((b): BlockWeights => {
        const block: BlockWeights = {
          attnNorm: copy(b.attnNorm),
          wq: copyMatrix(b.wq),
          wk: copyMatrix(b.wk),
          wv: copyMatrix(b.wv),
          wo: copyMatrix(b.wo),
          ffnNorm: copy(b.ffnNorm),
          wGate: copyMatrix(b.wGate),
          wUp: copyMatrix(b.wUp),
          wDown: copyMatrix(b.wDown),
        };
        for (const name of cfg.biases) block[LINEAR_BIAS[name]] = copy(b[LINEAR_BIAS[name]]!);
        if (cfg.qkNorm) [block.qNorm, block.kNorm] = [copy(b.qNorm!), copy(b.kNorm!)];
        return block;
      }),
      norm: copy(weights.norm),
      lmHead: tied ? embed : copyMatrix(weights.lmHead),
    };
    const { cos, sin } = ropeTables(T, headDim, cfg.ropeTheta, cfg.ropeScaling);
    this.#s = {
      x: arena.f32(T * dim),
      xb: arena.f32(T * dim),
      xb2: arena.f32(T * dim),
      q: arena.f32(T * qDim),
      k: arena.f32(T * kvDim),
      v: arena.f32(T * kvDim),
      attOut: arena.f32(T * qDim),
      hb: arena.f32(T * hiddenDim),
      hb2: arena.f32(T * hiddenDim),
      logits: arena.f32(T * vocabSize),
      qh: arena.f32(T * headDim),
      kh: arena.f32(T * headDim),
      vt: arena.f32(headDim * T),
      att: arena.f32(T * T),
      ho: arena.f32(T * headDim),
      cos: copy(cos),
      sin: copy(sin),
    };
    this.#cache = arena.f32(size.cache / 4);
  }

  /** Zeroes the weights of one linear layer whose bits are set in `mask` (the contract's bit-packed mask). */
  maskLinear(layer: number, name: LinearName, mask: Uint8Array): void {
    const w = this.w.layers[layer]![LINEAR_FIELD[name]];
    const [data, dtype] = w instanceof Float32Array ? [w, "f32" as const] : [w.data, w.dtype];
    zeroMasked(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), dtype, mask);
  }

  /** Writes the token embeddings of one window into x (T, dim). */
  embed(x: Float32Array, tokens: ArrayLike<number>): void {
    const { dim, vocabSize } = this.cfg;
    for (let t = 0; t < this.T; t++) {
      const id = tokens[t]!;
      if (!(id >= 0 && id < vocabSize)) throw new RangeError(`token id ${id} outside the vocabulary`);
      const e = this.w.embed, row = x.subarray(t * dim, t * dim + dim);
      if (e instanceof Float32Array) row.set(e.subarray(id * dim, id * dim + dim));
      else widenRow(row, e, id * dim, dim);
    }
  }

  /** One decoder block on x (T, dim) in place; adds the block's input statistics to `stats` when given. */
  block(l: number, x: Float32Array, stats?: BlockStats): void {
    const c = this.cfg, s = this.#s, b = this.w.layers[l]!, T = this.T;
    const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
    // attention
    rmsnorm(s.xb, x, b.attnNorm, T, c.dim, c.normEps);
    if (stats) sumSquares(stats.attnIn, s.xb, T, c.dim);
    matmul(s.q, s.xb, b.wq, T, c.dim, qDim);
    matmul(s.k, s.xb, b.wk, T, c.dim, kvDim);
    matmul(s.v, s.xb, b.wv, T, c.dim, kvDim);
    addBias(s.q, b.bq, T);
    addBias(s.k, b.bk, T);
    addBias(s.v, b.bv, T);
    if (b.qNorm && b.kNorm) {
      // Qwen3: each head of q and of k normalised on its own (rows of headDim), before RoPE.
      rmsnorm(s.q, s.q, b.qNorm, T * c.nHeads, c.headDim, c.normEps);
      rmsnorm(s.k, s.k, b.kNorm, T * c.nKvHeads, c.headDim, c.normEps);
    }
    rope(s.q, T, c.nHeads, c.headDim, s.cos, s.sin);
    rope(s.k, T, c.nKvHeads, c.headDim, s.cos, s.sin);
    attention(s.attOut, s.q, s.k, s.v, T, c.nHeads, c.nKvHeads, c.headDim, s);
    if (stats) sumSquares(stats.oIn, s.attOut, T, qDim);
    matmul(s.xb2, s.attOut, b.wo, T, qDim, c.dim);
    addBias(s.xb2, b.bo, T);
    accum(x, s.xb2, T * c.dim);
    // MLP
    rmsnorm(s.xb, x, b.ffnNorm, T, c.dim, c.normEps);
    if (stats) sumSquares(stats.mlpIn, s.xb, T, c.dim);
    matmul(s.hb, s.xb, b.wGate, T, c.dim, c.hiddenDim);
    matmul(s.hb2, s.xb, b.wUp, T, c.dim, c.hiddenDim);
    addBias(s.hb, b.bGate, T);
    addBias(s.hb2, b.bUp, T);
    swiglu(s.hb, s.hb2, T * c.hiddenDim);
    if (stats) sumSquares(stats.downIn, s.hb, T, c.hiddenDim);
    matmul(s.xb2, s.hb, b.wDown, T, c.hiddenDim, c.dim);
    addBias(s.xb2, b.bDown, T);
    accum(x, s.xb2, T * c.dim);
  }

  /** The full forward pass of one window; returns the logits (T, vocab), valid until the next call. */
  forward(tokens: ArrayLike<number>): Float32Array {
    const c = this.cfg, s = this.#s;
    this.embed(s.x, tokens);
    for (let l = 0; l < c.nLayers; l++) this.block(l, s.x);
    rmsnorm(s.xb, s.x, this.w.norm, this.T, c.dim, c.normEps);
    matmul(s.logits, s.xb, this.w.lmHead, this.T, c.dim, c.vocabSize);
    return s.logits;
  }

  /** Sum of the cross-entropy losses of the T - 1 predicted positions of one window (float64). */
  windowLoss(tokens: ArrayLike<number>): number {
    const logits = this.forward(tokens), V = this.cfg.vocabSize;
    let total = 0;
    for (let t = 0; t + 1 < this.T; t++) {
      const o = t * V;
      let max = -Infinity;
      for (let j = 0; j < V; j++) max = Math.max(max, logits[o + j]!);
      let sum = 0;
      for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - max);
      total += max + Math.log(sum) - logits[o + tokens[t + 1]!]!;
    }
    return total;
  }

  /** Embeds calibration windows (concatenated, T tokens each) into the cache, the input of block 0. */
  cacheEmbed(tokens: ArrayLike<number>, windows: number): void {
    const dim = this.cfg.dim, T = this.T;
    if (windows * T * dim > this.#cache.length) throw new RangeError(`cache holds fewer than ${windows} windows`);
    const ids = Array.from({ length: T }, () => 0);
    for (let w = 0; w < windows; w++) {
      for (let t = 0; t < T; t++) ids[t] = tokens[w * T + t]!;
      this.embed(this.#cache.subarray(w * T * dim, (w + 1) * T * dim), ids);
    }
    this.#cachedWindows = windows;
  }

  /**
   * Runs block l over every cached window: `collect` adds statistics and leaves the cache as it was; otherwise the
   * cache advances past the block.
   */
  cacheBlock(l: number, collect?: BlockStats): void {
    const dim = this.cfg.dim, T = this.T, s = this.#s;
    for (let w = 0; w < this.#cachedWindows; w++) {
      const h = this.#cache.subarray(w * T * dim, (w + 1) * T * dim);
      if (collect) {
        s.x.set(h);
        this.block(l, s.x, collect);
      } else {
        this.block(l, h);
      }
    }
  }
}
