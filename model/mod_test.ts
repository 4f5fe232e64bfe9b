import assert from "node:assert/strict";
import { loadModel } from "./mod.ts";
import { packedTensors } from "../tests/_safetensors_bytes.ts";

/**
 * TinyLlama-1.1B's config.json (less its torch_dtype): 1.10e9 parameters, 4.40 GB as float32, more than WebAssembly's
 * 4 GiB (4.29e9), 2.20 GB as 16-bit floats.
 */
const TINYLLAMA = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 2048,
  intermediate_size: 5632,
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  vocab_size: 32000,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: false,
};

/** A checkpoint directory holding only `config` (no weights at all). */
async function withConfigOnly(config: Record<string, unknown>, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("loadModel() refuses a model too large for WebAssembly's 4 GiB before reading any weights", async () => {
  // No safetensors file exists: reaching for one would fail with NotFound instead.
  const refused = (dir: string, as: string) => (e: Error) => {
    assert.ok(e instanceof RangeError, `${e.name}: ${e.message}`);
    assert.match(e.message, new RegExp(dir));
    assert.match(e.message, new RegExp(`needs a .* arena \\(${as} weights .*4 GiB`));
    return true;
  };
  // Stored as float32 (config.json's torch_dtype says so): 4.40 GB of weights.
  await withConfigOnly({ ...TINYLLAMA, torch_dtype: "float32" }, async (dir) => {
    await assert.rejects(() => loadModel(dir), refused(dir, "float32"));
  });
  // As shipped, bfloat16 (2.20 GB kept as stored), or with no dtype stated (the weights may be 16-bit): it fits, and
  // goes on to read the weights, which are missing.
  for (const dtype of [{ torch_dtype: "bfloat16" }, { dtype: "float16" }, {}]) {
    await withConfigOnly({ ...TINYLLAMA, ...dtype }, async (dir) => {
      await assert.rejects(() => loadModel(dir), Deno.errors.NotFound);
    });
  }
  // 48 layers (2.25e9 parameters, 4.5 GB in 16-bit) are past 4 GiB even so.
  await withConfigOnly({ ...TINYLLAMA, num_hidden_layers: 48 }, async (dir) => {
    await assert.rejects(() => loadModel(dir), refused(dir, "16-bit"));
  });
  // 16 float32 layers instead of 22 (0.84e9 parameters, 3.34 GB) fit.
  // (Its config.json states positions enough for such windows: past them, the window length is refused first.)
  const long = { ...TINYLLAMA, num_hidden_layers: 16, torch_dtype: "float32", max_position_embeddings: 8192 };
  await withConfigOnly(long, async (dir) => {
    await assert.rejects(() => loadModel(dir), Deno.errors.NotFound);
  });
});

/** A `model.safetensors` of one 4-element tensor `w` of `dtype`, none of the model's. */
async function writeOneTensor(
  dir: string,
  dtype: "F32" | "BF16",
  { file = "model.safetensors", name = "w", elements = 4, metadata }: {
    file?: string;
    name?: string;
    elements?: number;
    metadata?: Record<string, string>;
  } = {},
): Promise<void> {
  await Deno.writeFile(`${dir}/${file}`, packedTensors({ [name]: { dtype, shape: [elements] } }, metadata));
}

Deno.test("loadModel()'s check before reading weights takes the dtype the shards' headers give", async () => {
  // Past the check, the loader finds none of the model's tensors.
  const past = /has no tensor model\.layers\.0\.input_layernorm\.weight/;
  // No dtype in config.json, float32 shards: 4.40 GB of weights, refused.
  await withConfigOnly(TINYLLAMA, async (dir) => {
    await writeOneTensor(dir, "F32");
    await assert.rejects(() => loadModel(dir), /needs a 4\.\d\d GiB arena \(float32 weights 4\.\d\d GiB/);
  });
  // config.json says float32 where the shards hold bf16: the shards are what is loaded, 2.20 GB kept as stored.
  await withConfigOnly({ ...TINYLLAMA, torch_dtype: "float32" }, async (dir) => {
    await writeOneTensor(dir, "BF16");
    await assert.rejects(() => loadModel(dir), past);
    // Unless 16-bit matrices are to be decoded: 4.40 GB of float32 again.
    await assert.rejects(() => loadModel(dir, { keep16: false }), /arena \(float32 weights 4\.\d\d GiB/);
  });
  // Loaded as stored, bf16 matrices stay 16-bit, whatever the config says.
  await withConfigOnly({ ...TINYLLAMA, torch_dtype: "float32" }, async (dir) => {
    await writeOneTensor(dir, "BF16");
    await assert.rejects(() => loadModel(dir, { keep16: true }), past);
  });
  // transformers writes `__metadata__` ({"format": "pt"}) in every shard: not a tensor, and no reason to give up.
  await withConfigOnly(TINYLLAMA, async (dir) => {
    await writeOneTensor(dir, "F32", { metadata: { format: "pt" } });
    await assert.rejects(() => loadModel(dir), /needs a 4\.\d\d GiB arena/);
  });
  await withConfigOnly({ ...TINYLLAMA, torch_dtype: "float32" }, async (dir) => {
    await writeOneTensor(dir, "BF16", { metadata: { format: "pt" } });
    await assert.rejects(() => loadModel(dir), past);
  });
  // Every shard of an index counts: a bf16 one of 4 weights beside a float32 one of 1000 is float32 all but 0.2%,
  // whichever comes first.
  for (const order of [["a", "b"], ["b", "a"]]) {
    await withConfigOnly({ ...TINYLLAMA, torch_dtype: "bfloat16" }, async (dir) => {
      const [bf16, f32] = order.map((s) => `model-${s}.safetensors`);
      await writeOneTensor(dir, "BF16", { file: bf16, name: "small" });
      await writeOneTensor(dir, "F32", { file: f32, name: "large", elements: 1000 });
      await Deno.writeTextFile(
        `${dir}/model.safetensors.index.json`,
        JSON.stringify({ metadata: {}, weight_map: { small: bf16, large: f32 } }),
      );
      await assert.rejects(() => loadModel(dir), /needs a 4\.\d\d GiB arena/, order.join());
    });
  }
  // A header that cannot be trusted (here a claim of more bytes than the file holds, or a length past it) leaves the
  // bound to config.json, and the loader names the damage rather than a model too large.
  await withConfigOnly(TINYLLAMA, async (dir) => {
    await writeOneTensor(dir, "F32");
    const bytes = await Deno.readFile(`${dir}/model.safetensors`);
    await Deno.writeFile(`${dir}/model.safetensors`, bytes.subarray(0, bytes.length - 1));
    await assert.rejects(() => loadModel(dir), /tensor w offsets \[0, 16\] disagree with shape or file size/);
    await Deno.writeFile(`${dir}/model.safetensors`, new Uint8Array([255, 255, 255, 255, 0, 0, 0, 0]));
    await assert.rejects(() => loadModel(dir), /header length \d+ exceeds the file/);
  });
});

Deno.test("loadModel() takes Llama 3.2 1B's config (bf16): 4.88 GiB as float32, 2.58 GiB kept 16-bit", async () => {
  const llama32 = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 2048,
    intermediate_size: 8192,
    num_attention_heads: 32,
    num_hidden_layers: 16,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 128256,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    max_position_embeddings: 131072,
    tie_word_embeddings: true,
    rope_scaling: {
      factor: 32,
      high_freq_factor: 4,
      low_freq_factor: 1,
      original_max_position_embeddings: 8192,
      rope_type: "llama3",
    },
    torch_dtype: "bfloat16",
  };
  // Past the checks made before reading: the weights, missing here.
  await withConfigOnly(llama32, async (dir) => {
    await assert.rejects(() => loadModel(dir, { seqLen: 256, cacheTokens: 64 * 256 }), Deno.errors.NotFound);
  });
  await withConfigOnly({ ...llama32, torch_dtype: "float32" }, async (dir) => {
    await assert.rejects(() => loadModel(dir, { seqLen: 256 }), /needs a 4\.\d\d GiB arena \(float32 weights/);
  });
});

Deno.test("loadModel() counts the run state of the window length it is given", async () => {
  // The 16-layer float32 model fits alone; windows of 8192 tokens add a 8192² attention matrix and 8192 x 32000 logits
  // (1.3 GB) and push it past the limit.
  // (Its config.json states positions enough for such windows: past them, the window length is refused first.)
  const long = { ...TINYLLAMA, num_hidden_layers: 16, torch_dtype: "float32", max_position_embeddings: 8192 };
  await withConfigOnly(long, async (dir) => {
    await assert.rejects(() => loadModel(dir, { seqLen: 8192 }), /4 GiB.*8192|8192.*4 GiB/);
    await assert.rejects(() => loadModel(dir, { seqLen: 256 }), Deno.errors.NotFound);
  });
});

Deno.test("loadModel() refuses windows over a Mistral model's sliding window before reading weights", async () => {
  const small = { ...TINYLLAMA, num_hidden_layers: 2, model_type: "mistral", sliding_window: 64 };
  await withConfigOnly(small, async (dir) => {
    await assert.rejects(() => loadModel(dir, { seqLen: 65 }), (e: Error) => {
      assert.ok(e instanceof RangeError, `${e.name}: ${e.message}`);
      assert.match(e.message, /65 tokens.*sliding_window of 64/);
      return true;
    });
    // Up to the window, full causal attention is what the window computes: it goes on to the (missing) weights.
    await assert.rejects(() => loadModel(dir, { seqLen: 64 }), /neither model\.safetensors nor/);
  });
});

Deno.test("loadModel() refuses windows past max_position_embeddings before reading weights", async () => {
  const small = { ...TINYLLAMA, num_hidden_layers: 2, max_position_embeddings: 128 };
  await withConfigOnly(small, async (dir) => {
    await assert.rejects(() => loadModel(dir, { seqLen: 129 }), (e: Error) => {
      assert.ok(e instanceof RangeError, `${e.name}: ${e.message}`);
      assert.match(e.message, /129 tokens.*max_position_embeddings of 128.*--seqlen/);
      return true;
    });
    await assert.rejects(() => loadModel(dir, { seqLen: 128 }), /neither model\.safetensors nor/);
  });
  // Windows whose run state would not fit the 4 GiB arena either: the window length is named, a shorter one being
  // the way out (transformers' default 2048 positions).
  await withConfigOnly({ ...TINYLLAMA, num_hidden_layers: 16, torch_dtype: "float32" }, async (dir) => {
    await assert.rejects(() => loadModel(dir, { seqLen: 8192 }), /^RangeError: windows of 8192 tokens .* of 2048/);
  });
});

Deno.test("loadModel() says that only safetensors are read when a checkpoint has pytorch_model.bin", async () => {
  await withConfigOnly({ ...TINYLLAMA, num_hidden_layers: 2 }, async (dir) => {
    await assert.rejects(() => loadModel(dir), (e: Error) => {
      assert.ok(e instanceof Deno.errors.NotFound);
      assert.doesNotMatch(e.message, /pytorch_model/);
      return true;
    });
    await Deno.writeFile(`${dir}/pytorch_model.bin`, new Uint8Array(8));
    await assert.rejects(() => loadModel(dir), /it has pytorch_model\.bin; only safetensors are read/);
  });
});

Deno.test("loadModel() names config.json when it holds no JSON object", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const text of ["null", "[]", '"llama"']) {
      await Deno.writeTextFile(`${dir}/config.json`, text);
      await assert.rejects(() => loadModel(dir), new TypeError(`${dir}/config.json: it is not a JSON object`), text);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel() by default keeps bf16 matrices as stored and decodes f16 ones", async () => {
  // Both fit the 4 GiB as float32: "auto" keeps bf16 (matmul reads it as fast) and decodes f16 (whose widening is
  // slower).
  const fixtures = new URL("../tests/fixtures/hf_llama/", import.meta.url).pathname;
  const bf16 = await loadModel(`${fixtures}headdim-floor-gqa-tied-bf16`);
  const wq = bf16.weights.layers[0]!.wq;
  assert.ok(!(wq instanceof Float32Array) && wq.dtype === "bf16", "bf16: kept as stored");
  assert.ok(!(bf16.weights.embed instanceof Float32Array), "the (tied) embedding too");
  const f16 = await loadModel(`${fixtures}llama3-headdim-mqa-f16-sharded`);
  assert.ok(f16.weights.layers[0]!.wq instanceof Float32Array, "f16: decoded");
  // keep16: false decodes bf16 too.
  assert.ok(
    (await loadModel(`${fixtures}headdim-floor-gqa-tied-bf16`, { keep16: false })).weights.layers[0]!
      .wq instanceof Float32Array,
  );
});
