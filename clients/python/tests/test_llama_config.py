"""``zprune_client.llama_config`` refuses configs the LLaMA forward pass cannot run faithfully, as model/config.ts
does: another model type, RoPE scaling other than llama3 and linear, partial RoPE, an activation other than SiLU,
biased linear layers. Running them anyway would give a silently different model. The config checks need no torch;
``load_llama`` and the RoPE frequencies do."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from conftest import MODEL_DIR, REPO
from zprune_client.llama_config import LlamaConfig

BASE: Dict[str, Any] = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "vocab_size": 100,
}
#: A Mistral config over BASE: its KV heads given, as MistralConfig's default of 8 does not divide BASE's 4 heads.
MISTRAL: Dict[str, Any] = {"model_type": "mistral", "num_key_value_heads": 4}

REFUSED = [
    ({"hidden_act": "gelu_pytorch_tanh"}, "hidden_act"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"hidden_act": "relu"}, "hidden_act"),
    ({**MISTRAL, "attention_bias": True}, "attention_bias is not supported for mistral"),
    ({**MISTRAL, "mlp_bias": True}, "mlp_bias is not supported for mistral"),
    ({"model_type": "qwen3_moe"}, "model_type 'qwen3_moe'"),
    ({"model_type": "qwen2_moe"}, "model_type 'qwen2_moe'"),
    (
        {"model_type": "qwen2", "num_key_value_heads": 2, "use_sliding_window": True, "sliding_window": 0},
        "sliding_window",
    ),
    ({"rope_scaling": {"factor": 2.0}}, "rope_type"),
    ({"rope_parameters": {"rope_theta": 1e4, "rope_type": "yarn"}}, "rope_type yarn"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5"),
    ({"rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.25}}, "partial_rotary_factor 0.25"),
    ({"model_type": "granite", "embedding_multiplier": 12.0}, "model_type 'granite'"),
    ({"model_type": "smollm3", "no_rope_layers": [1, 0]}, "model_type 'smollm3'"),
    ({"model_type": "gemma", "hidden_act": None}, "model_type 'gemma'"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "quantized"),
    ({"rope_scaling": {"rope_type": None, "factor": 2.0}}, "rope_type"),
    ({"rope_scaling": "linear"}, "rope_type"),
    ({**MISTRAL, "sliding_window": 0}, "sliding_window"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"head_dim": 15}, "head_dim"),
    # NaN rotations or norms; a theta of 0 was silently taken for 10000.
    ({"rope_theta": 0}, "rope_theta must be a positive number"),
    ({"rope_theta": -1.0}, "rope_theta must be a positive number"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": "1e4"}}, "rope_theta must be a positive number"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps must be a number of at least 0"),
    ({"rope_parameters": "default"}, "rope_parameters must be an object"),
    # Infinite theta or epsilon: zero rotations, zeroed activations (model/config.ts refuses them too).
    ({"rope_theta": float("inf")}, "rope_theta must be a positive number"),
    ({"rms_norm_eps": float("inf")}, "rms_norm_eps must be a number of at least 0"),
    # JSON's true is no count, though Python's bool is an int.
    ({"num_hidden_layers": True}, "num_hidden_layers must be a positive integer, got True"),
    ({"partial_rotary_factor": 2}, "partial_rotary_factor 2 is not supported"),
    ({"rope_scaling": {"type": "linear", "factor": True}}, "needs factor, a positive number; got True"),
    ({"rope_scaling": {"type": "linear", "factor": float("inf")}}, "needs factor, a positive number; got inf"),
    ({"rope_scaling": {"type": "linear", "factor": 0}}, "needs factor, a positive number; got 0"),
]


@pytest.mark.parametrize("extra,key", REFUSED)
def test_from_dict_refuses_what_the_model_does_not_implement(extra: Dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        LlamaConfig.from_dict({**BASE, **extra})


def test_from_dict_accepts_the_spellings_of_the_same_forward_pass() -> None:
    # null counts as absent, as in model/config.ts
    accepted = (
        {},
        {"hidden_act": None},
        {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False},
        {"hidden_act": "swish"},
        {"model_type": "llama", "partial_rotary_factor": 1},
        {**MISTRAL, "sliding_window": None},
        {"rope_scaling": {"rope_type": "default"}},
        {"rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}},
        {"quantization_config": None},
        {"model_type": None, "partial_rotary_factor": None, "rope_scaling": None, "rope_parameters": None},
    )
    for extra in accepted:
        cfg = LlamaConfig.from_dict({**BASE, **extra})
        assert (cfg.head_dim, cfg.sliding_window) == (16, None), extra
    assert LlamaConfig.from_dict({**BASE, "rope_parameters": {"rope_theta": 5e5}}).rope_theta == 5e5


def test_from_dict_gives_qwen2_its_biases_and_qwen2configs_defaults() -> None:
    qwen2 = {**BASE, "model_type": "qwen2", "num_key_value_heads": 2}
    qkv = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    assert LlamaConfig.from_dict(qwen2).biases == qkv
    # Qwen2Attention and Qwen2MLP take no bias flags: transformers builds the same layers whatever these say.
    assert LlamaConfig.from_dict({**qwen2, "attention_bias": True, "mlp_bias": True}).biases == qkv
    # Left out: Qwen2Config's 32 KV heads and 32768 positions; null KV heads: num_attention_heads.
    heads = {**BASE, "model_type": "qwen2", "hidden_size": 512, "num_attention_heads": 64}
    assert LlamaConfig.from_dict(heads).num_key_value_heads == 32
    assert LlamaConfig.from_dict({**heads, "num_key_value_heads": None}).num_key_value_heads == 64
    with pytest.raises(ValueError, match=r"multiple of num_key_value_heads 32 \(Qwen2Config's default"):
        LlamaConfig.from_dict({**BASE, "model_type": "qwen2"})
    assert LlamaConfig.from_dict(heads).defaulted == ("num_key_value_heads", "max_position_embeddings")
    assert LlamaConfig.from_dict(qwen2).max_position_embeddings == 32768
    # The window counts only with use_sliding_window (4096 when sliding_window is left out).
    assert LlamaConfig.from_dict({**qwen2, "sliding_window": 512}).sliding_window is None
    assert LlamaConfig.from_dict({**qwen2, "use_sliding_window": True, "sliding_window": 512}).sliding_window == 512
    windowed = LlamaConfig.from_dict({**qwen2, "use_sliding_window": True, "max_position_embeddings": 64})
    assert (windowed.sliding_window, windowed.defaulted) == (4096, ("sliding_window",))


def test_from_dict_gives_qwen3_its_qk_norms_attention_biases_and_qwen3configs_defaults() -> None:
    qwen3 = {**BASE, "model_type": "qwen3", "num_key_value_heads": 2, "head_dim": 32}
    cfg = LlamaConfig.from_dict(qwen3)
    assert (cfg.qk_norm, cfg.biases, cfg.head_dim) == (True, (), 32)
    assert not LlamaConfig.from_dict(BASE).qk_norm
    # Qwen3Attention takes attention_bias for all four; Qwen3MLP has no bias, whatever mlp_bias says.
    attention = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    assert LlamaConfig.from_dict({**qwen3, "attention_bias": True, "mlp_bias": True}).biases == attention
    assert LlamaConfig.from_dict({**qwen3, "mlp_bias": True}).biases == ()
    # Left out: Qwen3Config's head_dim of 128 (not hidden_size // num_attention_heads), 32 KV heads, 32768 positions.
    assert LlamaConfig.from_dict({**qwen3, "head_dim": None}).head_dim == 128
    heads = {**BASE, "model_type": "qwen3", "hidden_size": 256, "num_attention_heads": 32}
    assert LlamaConfig.from_dict(heads).num_key_value_heads == 32
    assert LlamaConfig.from_dict(heads).defaulted == ("num_key_value_heads", "max_position_embeddings")
    assert cfg.max_position_embeddings == 32768
    assert LlamaConfig.from_dict({**qwen3, "use_sliding_window": True, "sliding_window": 256}).sliding_window == 256
    assert LlamaConfig.from_dict({**qwen3, "sliding_window": 256}).sliding_window is None


def test_from_dict_gives_llama_biases_where_attention_bias_and_mlp_bias_ask() -> None:
    attention = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    mlp = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    assert LlamaConfig.from_dict(BASE).biases == ()
    assert LlamaConfig.from_dict({**BASE, "attention_bias": True}).biases == attention
    assert LlamaConfig.from_dict({**BASE, "model_type": "llama", "mlp_bias": True}).biases == mlp
    assert LlamaConfig.from_dict({**BASE, "attention_bias": True, "mlp_bias": True}).biases == attention + mlp
    assert LlamaConfig.from_dict({**BASE, **MISTRAL, "attention_bias": False}).biases == ()


def test_sliding_window_bounds_the_window_length() -> None:
    cfg = LlamaConfig.from_dict({**BASE, **MISTRAL, "sliding_window": 64})
    cfg.check_window(64)  # up to the window, full causal attention is what the window computes
    with pytest.raises(ValueError, match="65 tokens.*sliding_window of 64"):
        cfg.check_window(65)
    # transformers' MistralConfig defaults the window to 4096; LlamaConfig has none, whatever the file says.
    assert LlamaConfig.from_dict({**BASE, **MISTRAL}).sliding_window == 4096
    assert LlamaConfig.from_dict({**BASE, **MISTRAL, "sliding_window": 4096.0}).sliding_window == 4096
    assert LlamaConfig.from_dict({**BASE, "model_type": "llama", "sliding_window": 64}).sliding_window is None


def test_max_position_embeddings_bounds_the_window_length() -> None:
    cfg = LlamaConfig.from_dict({**BASE, "max_position_embeddings": 128})
    cfg.check_window(128)
    with pytest.raises(ValueError, match="129 tokens.*max_position_embeddings of 128: it was not"):
        cfg.check_window(129)
    LlamaConfig.from_dict({**BASE, "max_position_embeddings": None}).check_window(1 << 20)
    # Left out: transformers' LlamaConfig default (2048), or MistralConfig's (4096 * 32).
    default = LlamaConfig.from_dict(BASE)
    default.check_window(2048)
    with pytest.raises(ValueError, match=r"2049 tokens.*max_position_embeddings of 2048 \(transformers' default: "
                       r"config.json leaves max_position_embeddings out\)"):
        default.check_window(2049)
    mistral = LlamaConfig.from_dict({**BASE, **MISTRAL})
    with pytest.raises(ValueError, match=r"sliding_window of 4096 \(transformers' default: config.json leaves "):
        mistral.check_window(4097)
    with pytest.raises(ValueError, match=r"sliding_window of 4096: this forward pass"):
        LlamaConfig.from_dict({**BASE, **MISTRAL, "sliding_window": 4096}).check_window(4097)
    assert LlamaConfig.from_dict({**BASE, "model_type": "llama"}).max_position_embeddings == 2048
    assert LlamaConfig.from_dict({**BASE, **MISTRAL}).max_position_embeddings == 131072
    for bad in (0, 2048.5, "2048"):
        with pytest.raises(ValueError, match="max_position_embeddings must be a positive integer"):
            LlamaConfig.from_dict({**BASE, "max_position_embeddings": bad})


def test_load_llama_refuses_before_building_the_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    # The bundled model's config with a GELU activation: its weights load (same names and shapes), which is
    # exactly why the activation has to be checked.
    config = json.loads((MODEL_DIR / "config.json").read_text())
    config["hidden_act"] = "gelu_pytorch_tanh"
    (tmp_path / "config.json").write_text(json.dumps(config))
    for f in MODEL_DIR.glob("model*.safetensors*"):
        (tmp_path / f.name).symlink_to(f)
    with pytest.raises(ValueError, match="hidden_act"):
        load_llama(tmp_path)


def test_load_llama_ties_a_stored_lm_head_to_the_embedding_as_transformers_does(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    # The bundled model stores an lm_head of its own; declared tied, the embedding must win (model/config.ts agrees).
    config = json.loads((MODEL_DIR / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    for f in MODEL_DIR.glob("model*.safetensors*"):
        (tmp_path / f.name).symlink_to(f)
    model = load_llama(tmp_path)
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    # Shared, as transformers ties them, not copied: one tensor, and a change to one is the other's.
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert len(list(model.parameters())) == len(list(load_llama(MODEL_DIR).parameters())) - 1
    assert not torch.equal(model.lm_head.weight, load_llama(MODEL_DIR).lm_head.weight)


#: What the child of the next test prints: its RSS growth over the load at the peak and after it, in bytes, and facts
#: about the loaded model.
#: The peak is VmHWM, this process's own high-water mark: ru_maxrss would also hold the parent's peak, which Linux
#: carries into a child across fork and exec (this test's parent holds the 128 MiB checkpoint it just wrote).
_LOAD_PEAK_CHILD = """
import json, re, sys, torch
from zprune_client.llama import load_llama
def status(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1)) * 1024
before = status("VmRSS")
model = load_llama(sys.argv[1], dtype=torch.bfloat16)
peak, held = status("VmHWM"), status("VmRSS")
embed = model.model.embed_tokens.weight
print(json.dumps({"growth": peak - before, "held": held - before,
                  "dtypes": sorted({str(p.dtype) for p in model.parameters()}),
                  "bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                  "embed_bits": embed[:, :4].view(torch.int16).tolist()[::4096],
                  "head_equal": torch.equal(model.lm_head.weight, embed)}))
"""


def test_load_llama_in_bfloat16_holds_no_float32_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    # A checkpoint whose tied embedding is nearly all of it (131072 x 512, 128 MiB in bfloat16; lm_head shares it).
    # Loaded as bfloat16, the process may grow by that model alone: not by a float32 model built first (256 MiB more),
    # nor by a copy of the embedding for lm_head, nor by a tensor read beside its parameter (128 MiB more each).
    vocab, hidden = 131072, 512
    config = {**BASE, "hidden_size": hidden, "intermediate_size": 256, "num_hidden_layers": 1, "vocab_size": vocab,
              "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shapes = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden],
              **{f"model.layers.0.{n}_layernorm.weight": [hidden] for n in ("input", "post_attention")},
              **{f"model.layers.0.self_attn.{p}_proj.weight": [hidden, hidden] for p in "qkvo"},
              "model.layers.0.mlp.gate_proj.weight": [256, hidden], "model.layers.0.mlp.up_proj.weight": [256, hidden],
              "model.layers.0.mlp.down_proj.weight": [hidden, 256]}
    header: Dict[str, Any] = {}
    at = 0
    for name, shape in shapes.items():
        end = at + 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [at, end]}
        at = end
    raw = json.dumps(header).encode()
    # bfloat16 bits of small numbers that differ row to row: row r of the embedding holds 0x3C00 + r % 256.
    data = np.empty(at // 2, np.uint16)
    data[: vocab * hidden] = (0x3C00 + (np.arange(vocab, dtype=np.uint16) % 256))[:, None].repeat(hidden, 1).ravel()
    data[vocab * hidden :] = 0x3F80  # 1.0
    with open(tmp_path / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        data.astype("<u2").tofile(f)
    del data
    done = subprocess.run([sys.executable, "-c", _LOAD_PEAK_CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "clients/python/src")})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    model_bytes = 2 * (vocab * hidden + 4 * hidden * hidden + 3 * 256 * hidden + 3 * hidden)  # parameters(): no lm_head
    assert got["dtypes"] == ["torch.bfloat16"] and got["bytes"] == model_bytes
    assert got["embed_bits"] == [[0x3C00 + r % 256] * 4 for r in range(0, vocab, 4096)] and got["head_equal"]
    limit = model_bytes + (64 << 20)  # the model and 64 MiB of slack
    assert got["growth"] < limit, f"grew {got['growth'] >> 20} MiB loading a {model_bytes >> 20} MiB bfloat16 model"
    # Once loaded, the process holds the model: the embedding once, not again as lm_head (32 MiB of slack).
    assert got["held"] < model_bytes + (32 << 20), f"holds {got['held'] >> 20} MiB for a {model_bytes >> 20} MiB model"


def test_load_llama_refuses_a_tensor_stored_in_two_shards(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    # The bundled checkpoint's shards, and one more holding a second model.norm.weight (which one would win is up to
    # the shard order): refused, naming both shards, as model/safetensors.ts does.
    (tmp_path / "config.json").symlink_to(MODEL_DIR / "config.json")
    for f in MODEL_DIR.glob("model-*.safetensors"):
        (tmp_path / f.name).symlink_to(f)
    dim = json.loads((MODEL_DIR / "config.json").read_text())["hidden_size"]
    header = json.dumps({"model.norm.weight": {"dtype": "F32", "shape": [dim], "data_offsets": [0, 4 * dim]}}).encode()
    (tmp_path / "extra.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4 * dim))
    index = json.loads((MODEL_DIR / "model.safetensors.index.json").read_text())
    index["weight_map"]["extra.copy"] = "extra.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    both = r"model\.norm\.weight is in both extra\.safetensors and model-\d+-of-\d+\.safetensors"
    with pytest.raises(ValueError, match=both):
        load_llama(tmp_path)


def test_load_llama_refuses_model_safetensors_beside_an_index(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    # transformers would load model.safetensors and ignore the index: which one is the model is a guess.
    for f in MODEL_DIR.iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "model.safetensors").write_bytes(bytes(16))
    with pytest.raises(ValueError, match=r"has both model\.safetensors and model\.safetensors\.index\.json"):
        load_llama(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    assert load_llama(tmp_path) is not None  # the index alone is read


def test_load_llama_refuses_an_index_shard_name_that_is_a_path(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    (tmp_path / "config.json").symlink_to(MODEL_DIR / "config.json")
    index = json.loads((MODEL_DIR / "model.safetensors.index.json").read_text())
    # A null or a number beside the other (string) shard names is named too, not a TypeError from sorting them.
    for shard in ("../model-00001-of-00003.safetensors", "sub/x.safetensors", "..", None, 3, ""):
        index["weight_map"]["model.norm.weight"] = shard
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(ValueError, match="not a file name in"):
            load_llama(tmp_path)


def test_load_llama_holds_one_stored_tensor_beside_the_model() -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    # tracemalloc sees numpy's arrays and Python's bytes, not torch's parameters: what the loader holds besides the
    # model. The whole checkpoint (every shard's bytes, then a float32 state dict) was held while the model was built.
    largest = 0
    for shard in MODEL_DIR.glob("model-*.safetensors"):
        with open(shard, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        largest = max([largest] + [end - start for k, v in header.items() if k != "__metadata__"
                                   for start, end in [v["data_offsets"]]])
    tracemalloc.start()
    try:
        load_llama(MODEL_DIR)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 2 * largest, f"{peak} bytes at the peak, the largest stored tensor {largest}"


def test_load_llama_names_a_tensor_of_another_shape_than_the_models(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    # The bundled checkpoint under a config with a wider MLP: refused, naming the first tensor that disagrees and its
    # shard, before any tensor is read (load_state_dict raised a RuntimeError listing every mismatch).
    config = json.loads((MODEL_DIR / "config.json").read_text())
    config["intermediate_size"] += 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    for f in MODEL_DIR.glob("model*.safetensors*"):
        (tmp_path / f.name).symlink_to(f)
    hidden, inter = config["hidden_size"], config["intermediate_size"] - 8
    want = (rf"tensor model\.layers\.0\.mlp\.gate_proj\.weight in model-\d+-of-\d+\.safetensors has shape "
            rf"\[{inter}, {hidden}\], the model's is \[{inter + 8}, {hidden}\]")
    with pytest.raises(ValueError, match=want):
        load_llama(tmp_path)


LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
SCALING_REFUSED = [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs low_freq_factor"),
    ({"rope_scaling": {**LLAMA3, "high_freq_factor": 1.0}}, "high_freq_factor, over low_freq_factor"),
    ({"rope_scaling": {**LLAMA3, "original_max_position_embeddings": 8192.5}}, "original_max_position_embeddings"),
    ({"rope_scaling": {**LLAMA3, "original_max_position_embeddings": 0}}, "original_max_position_embeddings"),
    ({"rope_scaling": {**LLAMA3, "original_max_position_embeddings": -8192}}, "original_max_position_embeddings"),
    ({"rope_scaling": {"type": "linear"}}, "needs factor"),
    ({"rope_scaling": {"type": "dynamic"}}, "rope_type dynamic needs factor"),
    # transformers cannot build dynamic RoPE without the length it scales from, nor with a head_dim of 2.
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}, "max_position_embeddings": None}, "dynamic needs max_pos"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}, "head_dim": 2}, "dynamic needs a head_dim over 2"),
    ({"rope_parameters": {"rope_theta": 1e4, "rope_type": "longrope"}}, "longrope"),
    # Disagreeing: which one the file meant is a guess; as model/config.ts refuses them.
    ({"rope_parameters": {"rope_type": "default"}, "rope_scaling": {"type": "linear", "factor": 4.0}}, "disagree"),
    ({"rope_parameters": {"rope_theta": 1e4, **LLAMA3}, "rope_scaling": {**LLAMA3, "factor": 4.0}}, "disagree"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6}}}, "per layer type"),
]


@pytest.mark.parametrize("extra,message", SCALING_REFUSED)
def test_from_dict_refuses_rope_scaling_it_cannot_run(extra: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LlamaConfig.from_dict({**BASE, **extra})


def test_from_dict_reads_llama3_and_linear_scaling_from_either_place() -> None:
    want = {
        "type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert LlamaConfig.from_dict({**BASE, "rope_theta": 5e5, "rope_scaling": LLAMA3}).rope_scaling == want
    newer = LlamaConfig.from_dict({**BASE, "rope_parameters": {"rope_theta": 5e5, **LLAMA3}})
    assert (newer.rope_scaling, newer.rope_theta) == (want, 5e5)
    null_type = {**BASE, "rope_parameters": {"rope_type": None, "rope_theta": 5e5}, "rope_scaling": LLAMA3}
    assert LlamaConfig.from_dict(null_type).rope_scaling == want
    twice = {**BASE, "rope_parameters": {"rope_theta": 5e5, **LLAMA3}, "rope_scaling": LLAMA3}
    assert LlamaConfig.from_dict(twice).rope_scaling == want  # the same scaling in both places is that scaling
    linear = LlamaConfig.from_dict({**BASE, "rope_scaling": {"type": "linear", "factor": 2}})
    assert linear.rope_scaling == {"type": "linear", "factor": 2.0}


def test_from_dict_runs_dynamic_rope_as_the_default_up_to_max_position_embeddings() -> None:
    """As model/config_test.ts: transformers' dynamic NTK RoPE is the default one up to max_position_embeddings, and
    original_max_position_embeddings does not move that limit."""
    spellings = [
        {"rope_scaling": {"type": "dynamic", "factor": 2}},
        {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
        {"rope_parameters": {"rope_type": "dynamic", "factor": 8, "original_max_position_embeddings": 512}},
    ]
    for extra in spellings:
        cfg = LlamaConfig.from_dict({**BASE, **extra, "max_position_embeddings": 4096})
        assert (cfg.rope_scaling, cfg.max_position_embeddings) == (None, 4096), extra
        cfg.check_window(4096)
        with pytest.raises(ValueError, match="4097 tokens"):
            cfg.check_window(4097)
    assert LlamaConfig.from_dict({**BASE, **spellings[0]}).max_position_embeddings == 2048


def test_rope_inv_freq_matches_transformers_snapshot() -> None:
    """Against transformers' own numbers (tests/fixtures/rope_inv_freq.json names the source), as model/ops_test.ts."""
    pytest.importorskip("torch")
    from zprune_client.llama import rope_inv_freq

    snap = json.loads((REPO / "tests" / "fixtures" / "rope_inv_freq.json").read_text())
    cfg = {**BASE, "hidden_size": 4096, "num_attention_heads": 32, "rope_theta": snap["config"]["rope_theta"]}
    cases = (({}, snap["default"]), ({"rope_scaling": snap["llama3"]["rope_scaling"]}, snap["llama3"]["inv_freq"]))
    for extra, printed in cases:
        got = rope_inv_freq(LlamaConfig.from_dict({**cfg, **extra})).tolist()
        assert len(got) == len(printed)
        for i, (g, p) in enumerate(zip(got, printed)):
            assert abs(g - p) <= 5e-5 * p, (extra, i, g, p)
    # linear divides every frequency by its factor
    plain = rope_inv_freq(LlamaConfig.from_dict(cfg))
    linear = rope_inv_freq(LlamaConfig.from_dict({**cfg, "rope_scaling": {"type": "linear", "factor": 4.0}}))
    assert linear.tolist() == (plain / 4).tolist()


def test_forward_applies_the_configs_rope_scaling() -> None:
    """linear x1 changes nothing, x2 changes every position but the first (angle 0), as model/llama_test.ts checks."""
    torch = pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    model = load_llama(MODEL_DIR)
    ids = torch.tensor([[(i * 97 + 5) % model.config.vocab_size for i in range(32)]])
    with torch.no_grad():
        plain = model(ids)
        model.config.rope_scaling = {"type": "linear", "factor": 1.0}
        assert torch.equal(model(ids), plain)
        model.config.rope_scaling = {"type": "linear", "factor": 2.0}
        stretched = model(ids)
    assert torch.equal(stretched[:, 0], plain[:, 0])
    assert not torch.equal(stretched[:, 1:], plain[:, 1:])


def _safetensors(header: Any, data_len: int) -> bytes:
    raw = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(range(data_len))


def _f32(shape: Any, offsets: Any) -> Dict[str, Any]:
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


SAFETENSORS_REFUSED = [
    # Both read bytes 0..8, and a negative dimension was inferred by numpy's reshape.
    ({"a": _f32([2], [0, 8]), "b": _f32([2], [0, 8])}, 8, "tensor b starts at byte 0 of the data, not 8"),
    ({"a": _f32([-1, 2], [0, 8])}, 8, "has shape"),
    ({"a": _f32([2], [0, 8]), "b": _f32([2], [16, 24])}, 24, "tensor b starts at byte 16 of the data, not 8"),
    ({"a": _f32([2], [0, 8])}, 12, "4 bytes of data follow the last tensor"),
    # model/safetensors_test.ts refuses the same file with the same message: the CLI cannot load F64 either.
    ({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, 8,
     "tensor a has dtype F64; only F32, F16 and BF16 are read"),
    ({"a": _f32([2], ["0", "8"])}, 8, "has data_offsets"),
    ({"__metadata__": {"a": 1}, "a": _f32([2], [0, 8])}, 8, "__metadata__ is not an object of strings"),
    ("null", 0, "its header is not a JSON object"),
    # 8 bytes for 3 floats: the third would be whatever memory held.
    ({"a": _f32([3], [0, 8])}, 8, "tensor a offsets [0, 8] disagree with shape or file size"),
    ({"a": _f32([2], [0, 8, 8])}, 8, "tensor a has data_offsets [0, 8, 8], not [begin, end] in bytes"),
]


@pytest.mark.parametrize("header,data_len,message", SAFETENSORS_REFUSED)
def test_load_safetensors_refuses_headers_that_read_other_bytes(
    tmp_path: Path, header: Any, data_len: int, message: str
) -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import load_safetensors

    path = tmp_path / "model.safetensors"
    path.write_bytes(_safetensors(header, data_len))
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        load_safetensors(path)
    # Out of key order and with a zero-size tensor, a file that tiles its data loads.
    path.write_bytes(_safetensors({"b": _f32([1], [8, 12]), "e": _f32([0], [8, 8]), "a": _f32([2], [0, 8])}, 12))
    assert load_safetensors(path)["b"].view(np.uint8).tolist() == [8, 9, 10, 11]


@pytest.mark.parametrize(
    "name",
    [
        "headdim-floor-gqa-tied-bf16",
        "llama3-headdim-mqa-f16-sharded",
        "ntk-dynamic-default-maxpos-f32",
        "qwen2-qkv-bias-gqa-tied-bf16",
        "untied-llama-attention-mlp-bias-f16",
        "wide-head-qwen3-qk-norm-tied-f32",
    ],
)
def test_load_llama_matches_transformers_on_fixture_checkpoints(name: str) -> None:
    """Logits and perplexity of tests/fixtures/hf_llama's checkpoints, computed by a float64 torch transcription of
    transformers' LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM (make_fixtures.py there;
    model/hf_fixtures_test.ts checks the
    TypeScript forward pass against the same figures)."""
    torch = pytest.importorskip("torch")
    from zprune_client.llama import load_llama, perplexity

    folder = REPO / "tests" / "fixtures" / "hf_llama" / name
    want = json.loads((folder / "expected.json").read_text())
    model = load_llama(folder)
    ids = torch.tensor(want["ids"])
    with torch.no_grad():
        logits = model(ids[:1])[0]
    assert float((logits.double() - torch.tensor(want["logits"], dtype=torch.float64)).abs().max()) < 1e-4
    assert perplexity(model, ids) == pytest.approx(want["ppl"], rel=1e-5)


def test_num_key_value_heads_defaults_as_in_transformers() -> None:
    # Left out: MistralConfig's 8, LlamaConfig's num_attention_heads; null: num_attention_heads in both.
    heads32 = {**BASE, "hidden_size": 256, "num_attention_heads": 32}
    assert LlamaConfig.from_dict({**heads32, "model_type": "mistral"}).num_key_value_heads == 8
    null = LlamaConfig.from_dict({**heads32, "model_type": "mistral", "num_key_value_heads": None})
    assert null.num_key_value_heads == 32
    assert LlamaConfig.from_dict({**heads32, "model_type": "llama"}).num_key_value_heads == 32
    assert LlamaConfig.from_dict(heads32).num_key_value_heads == 32
    with pytest.raises(ValueError, match=r"not a multiple of num_key_value_heads 8 \(MistralConfig's default"):
        LlamaConfig.from_dict({**BASE, "model_type": "mistral"})


def test_from_dict_takes_transformers_defaults_and_rope_parameters_first() -> None:
    # LlamaConfig's defaults: rope_theta 10000.0, rms_norm_eps 1e-6, tie_word_embeddings False.
    cfg = LlamaConfig.from_dict(BASE)
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.tie_word_embeddings) == (10000.0, 1e-6, False)
    # An epsilon of 0 is "at least 0", as model/config.ts takes it.
    assert LlamaConfig.from_dict({**BASE, "rms_norm_eps": 0}).rms_norm_eps == 0.0
    # Newer transformers keep theta in rope_parameters, which wins over a top-level one (as in model/config.ts).
    both = LlamaConfig.from_dict({**BASE, "rope_theta": 1e4, "rope_parameters": {"rope_theta": 5e5}})
    assert both.rope_theta == 5e5
    # The same linear scaling in both places, rope_scaling's rope_type null and its older `type` given: one scaling.
    same = LlamaConfig.from_dict({
        **BASE,
        "rope_parameters": {"rope_type": "linear", "factor": 2},
        "rope_scaling": {"type": "linear", "rope_type": None, "factor": 2},
    })
    assert same.rope_scaling == {"type": "linear", "factor": 2.0}


def test_load_safetensors_refuses_a_file_too_short_for_its_header_and_widens_bf16(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from zprune_client.llama import _read_stored, _safetensors_header, load_safetensors

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match=re.escape(f"{path}: too short for a safetensors header")):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match=re.escape(f"{path}: header length 1000 exceeds the file")):
        load_safetensors(path)
    # BF16 1.0, -2.0 and 0.5 (bits 0x3F80, 0xC000, 0x3F00) come back as float32.
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<3H", 0x3F80, 0xC000, 0x3F00))
    w = load_safetensors(path)["w"]
    assert w.dtype == np.float32 and w.tolist() == [1.0, -2.0, 0.5]
    # A file cut short after its header was read: the tensor is refused, not read short.
    (t,) = _safetensors_header(path)
    path.write_bytes(path.read_bytes()[:-2])
    with open(path, "rb") as f, pytest.raises(ValueError, match=re.escape(f"{path}: tensor w ends past the end")):
        _read_stored(f, path, t)


#: A small tied checkpoint of tests/fixtures/hf_llama: 36 wide, 8 heads of 4 (4 KV heads), 61 ids, 64 positions.
_TIED = REPO / "tests" / "fixtures" / "hf_llama" / "headdim-floor-gqa-tied-bf16"


def _with_tensor(dst: Path, name: str, shape: Any, values: Any) -> Path:
    """A copy of _TIED at ``dst`` whose model.safetensors holds one more F32 tensor, after the others' bytes."""
    raw = (_TIED / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    extra = np.asarray(values, dtype="<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(extra)]}
    encoded = json.dumps(header).encode()
    dst.mkdir()
    (dst / "config.json").write_bytes((_TIED / "config.json").read_bytes())
    (dst / "model.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + data + extra)
    return dst


def test_load_llama_skips_rotary_tables_refuses_other_tensors_and_a_tied_head_of_another_shape(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    ids = torch.arange(16).reshape(1, 16) % 61
    with torch.no_grad():
        want = load_llama(_TIED)(ids)
        # Older checkpoints store the inverse frequencies, which the model recomputes.
        rotary = _with_tensor(tmp_path / "rotary", "model.layers.0.self_attn.rotary_emb.inv_freq", [2], [1.0, 0.5])
        assert torch.equal(load_llama(rotary)(ids), want)
    # A bias this model has no place for would be dropped silently.
    bias = _with_tensor(tmp_path / "bias", "model.layers.0.self_attn.q_proj.bias", [32], np.zeros(32))
    with pytest.raises(ValueError, match=re.escape("unexpected ['model.layers.0.self_attn.q_proj.bias']")):
        load_llama(bias)
    # Tied: a stored lm_head is re-tied to the embedding, but one of another shape is another model.
    head = _with_tensor(tmp_path / "head", "lm_head.weight", [7, 36], np.zeros(7 * 36))
    with pytest.raises(ValueError, match=re.escape("tied lm_head.weight has shape [7, 36], not [61, 36]")):
        load_llama(head)
    # The model itself refuses a window past max_position_embeddings (64), not only its config's check.
    with pytest.raises(ValueError, match="windows of 65 tokens are longer than the model's max_position_embeddings"):
        load_llama(_TIED)(torch.zeros(1, 65, dtype=torch.int64))


def test_load_llama_in_bfloat16_converts_f16_weights_by_value() -> None:
    torch = pytest.importorskip("torch")
    from zprune_client.llama import load_llama

    # The bundled checkpoint is F16: its values rounded to bfloat16, not its bits read as bfloat16.
    wide, narrow = load_llama(MODEL_DIR), load_llama(MODEL_DIR, dtype=torch.bfloat16)
    for name, p in wide.state_dict().items():
        assert torch.equal(narrow.state_dict()[name], p.to(torch.bfloat16)), name
