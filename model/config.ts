/**
 * The LLaMA hyper-parameters the forward pass needs, read from a Hugging Face `config.json`, and the weights
 * decoded to float32 in llama2.c's layout (config, weights and run-state kept apart).
 */
import { type Checkpoint, decodeToF32 } from "./safetensors.ts";
import { firstNonFinite } from "../contract/dtype_codec.ts";
import type { WeightMatrix } from "./ops.ts";

/** LLaMA hyper-parameters. */
export interface LlamaConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  normEps: number;
  ropeTheta: number;
  /** RoPE frequency scaling (Llama 3.1's `llama3`, or `linear`); absent for the default RoPE and for `dynamic`. */
  ropeScaling?: RopeScaling;
  tieEmbeddings: boolean;
  /** The linear layers with a bias, added after their product (Qwen2's q, k and v; LLaMA's per config.json). */
  biases: readonly LinearName[];
  /** Qwen3's RMSNorm of each head of q and k (weights of headDim), between their products and RoPE. */
  qkNorm: boolean;
  /**
   * Mistral's attention window (Qwen2's and Qwen3's with use_sliding_window); the forward pass attends to whole
   * windows, so it refuses longer ones.
   */
  slidingWindow?: number;
  /**
   * `max_position_embeddings`: the longest window the model was trained on; longer ones are refused. When config.json
   * leaves it out, transformers' default (LlamaConfig's 2048, MistralConfig's 4096 * 32, Qwen2Config's and
   * Qwen3Config's 32768); absent only where it is null.
   */
  maxPositions?: number;
  /** The config.json keys left out and taken at transformers' defaults (named in the window refusals). */
  defaulted: readonly string[];
}

/**
 * RoPE frequency scaling as transformers computes it at load time (modeling_rope_utils): `linear` divides every
 * inverse frequency by `factor`; `llama3` divides the low frequencies (wavelength over `originalMaxPositions /
 * lowFreqFactor`) by `factor`, keeps the high ones (under `originalMaxPositions / highFreqFactor`) and blends
 * those between. Neither changes the attention scale.
 */
export type RopeScaling =
  | { type: "linear"; factor: number }
  | {
    type: "llama3";
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositions: number;
  };

/**
 * The `model_type`s whose forward pass is exactly this one (Qwen2's is LLaMA's with a bias on q, k and v, Qwen3's
 * with an RMSNorm of each head of q and k). Others reuse LLaMA's tensor names with a different computation
 * (Granite's multipliers, SmolLM3's layers without RoPE, Gemma's activation and norms), so their weights would load
 * and run, silently wrong.
 */
const SUPPORTED_MODEL_TYPES = ["llama", "mistral", "qwen2", "qwen3"] as const;

/** transformers' config class of each supported `model_type`, to name the source of a default. */
const CONFIG_CLASS = {
  llama: "LlamaConfig",
  mistral: "MistralConfig",
  qwen2: "Qwen2Config",
  qwen3: "Qwen3Config",
} as const;

/** The names of one decoder block's seven pruned linear layers, in request order. */
export const LINEAR_NAMES = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.up_proj",
  "mlp.down_proj",
] as const;
/** One of a block's linear layers. */
export type LinearName = (typeof LINEAR_NAMES)[number];

/** The RoPE scaling `type` asks for, from the object holding its fields; throws for a type or field it cannot run. */
function parseRopeScaling(
  type: string | undefined,
  fields: Record<string, unknown> | undefined,
): RopeScaling | undefined {
  if (type === undefined || type === "default") return undefined;
  const field = (key: string, ok: (v: number) => boolean, what: string): number => {
    const v = fields?.[key];
    if (typeof v !== "number" || !ok(v)) {
      throw new TypeError(`config.json: rope_type ${type} needs ${key}, ${what}; got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const positive = (v: number) => Number.isFinite(v) && v > 0;
  if (type === "linear") return { type, factor: field("factor", positive, "a positive number") };
  if (type === "llama3") {
    const lowFreqFactor = field("low_freq_factor", positive, "a positive number");
    return {
      type,
      factor: field("factor", positive, "a positive number"),
      lowFreqFactor,
      // Equal factors would leave no band to blend across (and divide by zero in it).
      highFreqFactor: field("high_freq_factor", (v) => Number.isFinite(v) && v > lowFreqFactor, "over low_freq_factor"),
      originalMaxPositions: field(
        "original_max_position_embeddings",
        (v) => Number.isInteger(v) && v > 0,
        "a positive integer",
      ),
    };
  }
  // Dynamic NTK is the default RoPE for every window up to max_position_embeddings, the longest one this forward pass
  // runs (parseConfig checks the rest): transformers still needs its factor.
  if (type === "dynamic") {
    field("factor", positive, "a positive number");
    return undefined;
  }
  // yarn and longrope (attention scaling, and frequencies of their own).
  throw new TypeError(`config.json: rope_type ${type} is not supported (default, linear, llama3 and dynamic only)`);
}

/** Reads the hyper-parameters of a LLaMA-family `config.json`. */
export function parseConfig(raw: Record<string, unknown>): LlamaConfig {
  const num = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== "number") throw new TypeError(`config.json: ${key} must be a number`);
    return v;
  };
  // Sizes index arrays and split heads: anything but a positive integer would run on garbage.
  const size = (key: string, fallback?: number, fallbackFrom?: string): number => {
    const v = num(key, fallback);
    if (!(Number.isInteger(v) && v > 0)) {
      const from = (raw[key] ?? undefined) === undefined && fallbackFrom
        ? ` (${fallbackFrom}, as ${key} is absent)`
        : "";
      throw new TypeError(`config.json: ${key} must be a positive integer, got ${v}${from}`);
    }
    return v;
  };
  const modelType = raw.model_type ?? undefined;
  if (modelType !== undefined && !(SUPPORTED_MODEL_TYPES as readonly unknown[]).includes(modelType)) {
    throw new TypeError(
      `config.json: model_type ${JSON.stringify(modelType)} is not supported (${
        SUPPORTED_MODEL_TYPES.join(", ")
      } only)`,
    );
  }
  // Quantized weights (GPTQ, AWQ, bitsandbytes) are stored under other tensor names and formats.
  if (raw.quantization_config != null) throw new TypeError("config.json: quantized checkpoints are not supported");
  const type = (modelType ?? "llama") as keyof typeof CONFIG_CLASS;
  const dim = size("hidden_size");
  const nHeads = size("num_attention_heads");
  // Left out, MistralConfig takes 8, Qwen2Config and Qwen3Config 32, LlamaConfig num_attention_heads; null is
  // num_attention_heads in all four.
  const kvDefault = ({ llama: undefined, mistral: 8, qwen2: 32, qwen3: 32 } as const)[type];
  const kvDefaulted = kvDefault !== undefined && !("num_key_value_heads" in raw);
  const nKvHeads = size("num_key_value_heads", kvDefaulted ? kvDefault : nHeads);
  // Grouped-query attention gives each KV head the same number of query heads.
  if (nHeads % nKvHeads !== 0) {
    throw new TypeError(
      `config.json: num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}` +
        (kvDefaulted ? ` (${CONFIG_CLASS[type]}'s default, as num_key_value_heads is absent)` : ""),
    );
  }
  // transformers' LLaMA, Mistral and Qwen2: head_dim, else hidden_size // num_attention_heads (floored: q_proj is
  // then narrower than hidden_size, as with an explicit head_dim), as the Python client reads it too. Qwen3Config's
  // head_dim is 128 when left out.
  const headDim = type === "qwen3"
    ? size("head_dim", 128, "Qwen3Config's default")
    : size("head_dim", Math.floor(dim / nHeads), "hidden_size // num_attention_heads");
  // RoPE rotates pairs of dimensions.
  if (headDim % 2 !== 0) throw new TypeError(`config.json: head_dim ${headDim} must be even for RoPE`);
  // Newer transformers nest rope_theta under rope_parameters; older checkpoints keep it at the top.
  type RopeFields = Record<string, unknown> & {
    rope_theta?: number;
    rope_type?: string;
    type?: string;
    partial_rotary_factor?: number;
  };
  const ropeParams = (raw.rope_parameters ?? undefined) as RopeFields | undefined;
  if (ropeParams !== undefined && (typeof ropeParams !== "object" || Array.isArray(ropeParams))) {
    throw new TypeError(`config.json: rope_parameters must be an object, got ${JSON.stringify(ropeParams)}`);
  }
  // Per layer type ({full_attention: {...}, sliding_attention: {...}}, as Gemma-style configs write it): this forward
  // pass has one RoPE for every layer, and reading the outer object's missing fields as defaults would be wrong. A
  // list (longrope's long_factor) is a field of one RoPE, not a layer type's: its rope_type is refused below by name.
  const nested = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
  if (ropeParams && Object.values(ropeParams).some(nested)) {
    throw new TypeError("config.json: rope_parameters per layer type is not supported (one RoPE for all layers only)");
  }
  // rope_scaling spells it rope_type, or type in older checkpoints.
  const scaling = (raw.rope_scaling ?? undefined) as RopeFields | undefined;
  // Both, saying different things: no transformers version writes that (5 writes rope_parameters alone, older ones
  // rope_scaling), so a hand-edited or converted file's author meant one of them, and which is a guess (transformers
  // would go by rope_scaling). What one leaves out the other may give (rope_theta in one, the scaling in the other),
  // and the same scaling written in both places is that scaling.
  if (ropeParams && scaling !== undefined) {
    const agree = typeof scaling === "object" && !Array.isArray(scaling) &&
      (ropeParams.rope_type == null || ropeParams.rope_type === (scaling.rope_type ?? scaling.type)) &&
      Object.entries(scaling).every(([k, v]) =>
        k === "type" || k === "rope_type" || ropeParams[k] == null || ropeParams[k] === v
      );
    if (!agree) {
      throw new TypeError(
        `config.json: rope_parameters ${JSON.stringify(ropeParams)} and rope_scaling ${JSON.stringify(scaling)} ` +
          "disagree; keep the one that applies",
      );
    }
  }
  // An object without a type still asks for scaling (its factor), which transformers cannot build either.
  const ropeType = ropeParams?.rope_type ?? scaling?.rope_type ?? scaling?.type ??
    (scaling === undefined ? undefined : "(none)");
  // Newer transformers keep the scaling's fields beside rope_type in rope_parameters, older ones in rope_scaling; both
  // given, they agree (above), and a field either one gives counts (a factor in rope_scaling alone, say).
  const given = (o: unknown) =>
    typeof o === "object" && o !== null ? Object.fromEntries(Object.entries(o).filter(([, v]) => v != null)) : {};
  const ropeScaling = parseRopeScaling(ropeType, { ...given(scaling), ...given(ropeParams) });
  // RoPE over part of each head only (Phi, StableLM): this forward pass rotates whole heads.
  const partial = ropeParams?.partial_rotary_factor ?? raw.partial_rotary_factor ?? 1;
  if (partial !== 1) throw new TypeError(`config.json: partial_rotary_factor ${partial} is not supported (only 1)`);
  // transformers' LlamaAttention and LlamaMLP have a bias on all their layers where attention_bias and mlp_bias say
  // so; Qwen2Attention one on q, k and v (none on o) and Qwen2MLP none, whatever those keys say; Qwen3Attention on
  // its four where attention_bias says so, and Qwen3MLP none. MistralConfig has neither key, and its layers no bias:
  // a file that asks for one expects a model transformers would not build.
  const biases: LinearName[] = type === "qwen2" ? ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"] : [];
  const flags = [["attention_bias", LINEAR_NAMES.slice(0, 4)], ["mlp_bias", LINEAR_NAMES.slice(4)]] as const;
  for (const [key, names] of flags) {
    if (type === "qwen2" || (type === "qwen3" && key === "mlp_bias") || raw[key] !== true) continue;
    if (type === "mistral") throw new TypeError(`config.json: ${key} is not supported for mistral (no biases)`);
    biases.push(...names);
  }
  const act = raw.hidden_act ?? "silu";
  // transformers' ACT2FN maps "swish" to the same SiLU.
  if (act !== "silu" && act !== "swish") {
    throw new TypeError(`config.json: hidden_act ${act} is not supported (only silu)`);
  }
  // Mistral's attention uses the window (4096 when config.json leaves it out), Qwen2's and Qwen3's only with
  // use_sliding_window
  // (and then on the layers from max_window_layers on: taken here as all, so that longer windows are refused whichever
  // layers slide); LLaMA's ignores the key.
  const windowed = type === "mistral" || ((type === "qwen2" || type === "qwen3") && raw.use_sliding_window === true);
  const window = windowed ? ("sliding_window" in raw ? raw.sliding_window ?? undefined : 4096) : undefined;
  if (window !== undefined && !(Number.isInteger(window) && (window as number) > 0)) {
    throw new TypeError(`config.json: sliding_window must be a positive integer or null, got ${window}`);
  }
  // Left out, transformers' LlamaConfig and MistralConfig take their defaults; null (which transformers 4 keeps as
  // None, and whose default RoPE never reads it) leaves windows unbounded.
  const maxPositions = "max_position_embeddings" in raw
    ? raw.max_position_embeddings ?? undefined
    : ({ llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768 } as const)[type];
  if (maxPositions !== undefined && !(Number.isInteger(maxPositions) && (maxPositions as number) > 0)) {
    throw new TypeError(`config.json: max_position_embeddings must be a positive integer, got ${maxPositions}`);
  }
  if (ropeType === "dynamic") {
    // transformers (modeling_rope_utils' _compute_dynamic_ntk_parameters) builds the frequencies of a window of
    // max_position_embeddings tokens, base * 1 ** (head_dim / (head_dim - 2)) = base, and builds them again only for a
    // window longer than that (dynamic_rope_update), which checkWindowLength refuses. original_max_position_embeddings
    // does not enter: no transformers version reads it for dynamic. Without the length, or with a head_dim of 2 (a
    // division by zero), transformers cannot build the RoPE at all.
    if (maxPositions === undefined) {
      throw new TypeError(
        "config.json: rope_type dynamic needs max_position_embeddings, the window length up to which it is the " +
          "default RoPE; got null",
      );
    }
    if (headDim === 2) throw new TypeError("config.json: rope_type dynamic needs a head_dim over 2, got 2");
  }
  // A zero, negative or string theta gives NaN rotations, a negative epsilon NaN norms: the run would fail only at
  // the server, on NaN activations, or measure a NaN perplexity.
  const ropeTheta = ropeParams?.rope_theta ?? num("rope_theta", 10000);
  if (!(typeof ropeTheta === "number" && Number.isFinite(ropeTheta) && ropeTheta > 0)) {
    // JSON.stringify would write an infinity (1e400 in the file) as null.
    const got = typeof ropeTheta === "number" ? String(ropeTheta) : JSON.stringify(ropeTheta);
    throw new TypeError(`config.json: rope_theta must be a positive number, got ${got}`);
  }
  const normEps = num("rms_norm_eps", 1e-6);
  if (!(Number.isFinite(normEps) && normEps >= 0)) {
    throw new TypeError(`config.json: rms_norm_eps must be a number of at least 0, got ${normEps}`);
  }
  return {
    dim,
    hiddenDim: size("intermediate_size"),
    nLayers: size("num_hidden_layers"),
    nHeads,
    nKvHeads,
    headDim,
    vocabSize: size("vocab_size"),
    normEps,
    ropeTheta,
    ...(ropeScaling ? { ropeScaling } : {}),
    tieEmbeddings: raw.tie_word_embeddings === true,
    biases,
    qkNorm: type === "qwen3",
    ...(window !== undefined ? { slidingWindow: window as number } : {}),
    ...(maxPositions !== undefined ? { maxPositions: maxPositions as number } : {}),
    defaulted: [
      ...(kvDefaulted ? ["num_key_value_heads"] : []),
      ...(windowed && !("sliding_window" in raw) ? ["sliding_window"] : []),
      ...(!("max_position_embeddings" in raw) ? ["max_position_embeddings"] : []),
    ],
  };
}

/** One decoder block's float32 weights; shapes as torch's Linear.weight (out, in). */
export interface BlockWeights {
  attnNorm: Float32Array; // (dim)
  wq: WeightMatrix; // (nHeads * headDim, dim)
  wk: WeightMatrix; // (nKvHeads * headDim, dim)
  wv: WeightMatrix; // (nKvHeads * headDim, dim)
  wo: WeightMatrix; // (dim, nHeads * headDim)
  ffnNorm: Float32Array; // (dim)
  wGate: WeightMatrix; // (hiddenDim, dim)
  wUp: WeightMatrix; // (hiddenDim, dim)
  wDown: WeightMatrix; // (dim, hiddenDim)
  /** Biases (out) of the layers `LlamaConfig.biases` names, absent for the others (see `LINEAR_BIAS`). */
  bq?: Float32Array;
  bk?: Float32Array;
  bv?: Float32Array;
  bo?: Float32Array;
  bGate?: Float32Array;
  bUp?: Float32Array;
  bDown?: Float32Array;
  /** Qwen3's RMSNorm weights of each head of q and of k (headDim), when `LlamaConfig.qkNorm`. */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
}

/** All weights of a LLaMA model: norms in float32; matrices in float32 or, kept as stored, 16-bit floats. */
export interface LlamaWeights {
  embed: WeightMatrix; // (vocab, dim)
  layers: BlockWeights[];
  norm: Float32Array; // (dim)
  lmHead: WeightMatrix; // (vocab, dim), the embedding itself when tied
}

/** The bytes `weights` take (each array 16-byte aligned, as an arena holds them; a tied head once). */
export function storedWeightBytes(weights: LlamaWeights): number {
  const bytes = (a: WeightMatrix) => Math.ceil((a instanceof Float32Array ? a : a.data).byteLength / 16) * 16;
  let total = bytes(weights.embed) + bytes(weights.norm) +
    (weights.lmHead === weights.embed ? 0 : bytes(weights.lmHead));
  for (const b of weights.layers) for (const w of Object.values(b)) total += bytes(w);
  return total;
}

/** A BlockWeights field that holds a linear layer's weight matrix. */
export type WeightField = "wq" | "wk" | "wv" | "wo" | "wGate" | "wUp" | "wDown";

/** Which BlockWeights field holds each linear layer. */
export const LINEAR_FIELD: Record<LinearName, WeightField> = {
  "self_attn.q_proj": "wq",
  "self_attn.k_proj": "wk",
  "self_attn.v_proj": "wv",
  "self_attn.o_proj": "wo",
  "mlp.gate_proj": "wGate",
  "mlp.up_proj": "wUp",
  "mlp.down_proj": "wDown",
};

/** A BlockWeights field that holds a bias. */
export type BiasField = "bq" | "bk" | "bv" | "bo" | "bGate" | "bUp" | "bDown";

/** Which BlockWeights field holds each linear layer's bias. */
export const LINEAR_BIAS: Record<LinearName, BiasField> = {
  "self_attn.q_proj": "bq",
  "self_attn.k_proj": "bk",
  "self_attn.v_proj": "bv",
  "self_attn.o_proj": "bo",
  "mlp.gate_proj": "bGate",
  "mlp.up_proj": "bUp",
  "mlp.down_proj": "bDown",
};

/** A linear layer's weight shape, (out, in) as torch's Linear.weight. */
export function linearShape(cfg: LlamaConfig, name: LinearName): [number, number] {
  const { dim, hiddenDim } = cfg, qDim = cfg.nHeads * cfg.headDim, kvDim = cfg.nKvHeads * cfg.headDim;
  const shapes: Record<LinearName, [number, number]> = {
    "self_attn.q_proj": [qDim, dim],
    "self_attn.k_proj": [kvDim, dim],
    "self_attn.v_proj": [kvDim, dim],
    "self_attn.o_proj": [dim, qDim],
    "mlp.gate_proj": [hiddenDim, dim],
    "mlp.up_proj": [hiddenDim, dim],
    "mlp.down_proj": [dim, hiddenDim],
  };
  return shapes[name];
}

/**
 * Decodes a checkpoint's tensors (f32, f16 or bf16) into float32 weights; with `keep16` (true, or "bf16" for those
 * only), its 16-bit matrices stay as stored, views of the checkpoint's bytes (half the memory; the same products; and
 * pruning the checkpoint's tensors edits them too). Throws when a tensor is missing, when its shape is not the one
 * config.json implies (a wrong num_key_value_heads, say), or when the checkpoint holds one this model does not use (a
 * bias, say): in each case the forward pass would silently compute something else.
 */
export function decodeWeights(ckpt: Checkpoint, cfg: LlamaConfig, keep16: boolean | "bf16" = false): LlamaWeights {
  const { dim, vocabSize } = cfg;
  const used = new Set<string>();
  const take = (name: string, shape: number[]) => {
    const t = ckpt.tensors.get(name);
    if (!t) throw new TypeError(`checkpoint ${ckpt.dir} has no tensor ${name}`);
    if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) {
      throw new TypeError(
        `checkpoint ${ckpt.dir}: tensor ${name} has shape [${t.shape.join(", ")}], ` +
          `config.json implies [${shape.join(", ")}]`,
      );
    }
    used.add(name);
    return t;
  };
  const get = (name: string, shape: number[]): Float32Array => {
    const t = take(name, shape);
    return decodeToF32(t.data, t.dtype);
  };
  // A matrix kept as stored where `keep16` takes its dtype and it is finite (matmul's widening reads finite values
  // only; one with a NaN or infinity is decoded, and the forward pass computes with it as with float32 weights).
  const matrix = (name: string, shape: number[]): WeightMatrix => {
    const t = take(name, shape);
    const kept = t.dtype !== "f32" && (keep16 === true || keep16 === t.dtype);
    if (!kept || firstNonFinite(t.data, t.dtype) >= 0) return decodeToF32(t.data, t.dtype);
    const aligned = t.data.byteOffset % 2 === 0 ? t.data : t.data.slice();
    const dtype = t.dtype as "bf16" | "f16";
    return { dtype, data: new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2) };
  };
  const layers: BlockWeights[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `model.layers.${l}.`;
    const linear = (name: LinearName) => matrix(`${p}${name}.weight`, linearShape(cfg, name));
    const block: BlockWeights = {
      attnNorm: get(p + "input_layernorm.weight", [dim]),
      wq: linear("self_attn.q_proj"),
      wk: linear("self_attn.k_proj"),
      wv: linear("self_attn.v_proj"),
      wo: linear("self_attn.o_proj"),
      ffnNorm: get(p + "post_attention_layernorm.weight", [dim]),
      wGate: linear("mlp.gate_proj"),
      wUp: linear("mlp.up_proj"),
      wDown: linear("mlp.down_proj"),
    };
    // Decoded to float32 whatever their dtype: a vector per layer, added to float32 products.
    for (const name of cfg.biases) block[LINEAR_BIAS[name]] = get(`${p}${name}.bias`, [linearShape(cfg, name)[0]]);
    if (cfg.qkNorm) {
      block.qNorm = get(p + "self_attn.q_norm.weight", [cfg.headDim]);
      block.kNorm = get(p + "self_attn.k_norm.weight", [cfg.headDim]);
    }
    layers.push(block);
  }
  const embed = matrix("model.embed_tokens.weight", [vocabSize, dim]);
  // Tied: transformers re-ties a stored lm_head to the embedding, but one of another shape is a different model.
  const lmHead = cfg.tieEmbeddings ? embed : matrix("lm_head.weight", [vocabSize, dim]);
  if (cfg.tieEmbeddings && ckpt.tensors.has("lm_head.weight")) take("lm_head.weight", [vocabSize, dim]);
  const norm = get("model.norm.weight", [dim]);
  // Rotary tables are recomputed.
  const unused = [...ckpt.tensors.keys()].filter((n) => !used.has(n) && !n.includes("rotary_emb"));
  if (unused.length > 0) {
    throw new TypeError(
      `checkpoint ${ckpt.dir} holds tensors this LLaMA forward pass does not use: ${unused.slice(0, 5).join(", ")}` +
        (unused.length > 5 ? ` and ${unused.length - 5} more` : ""),
    );
  }
  return { embed, layers, norm, lmHead };
}
