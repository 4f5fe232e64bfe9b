"""A small, dependency-free PyTorch LLaMA for checkpoints in the Hugging Face layout, plus perplexity evaluation.

transformers is not needed: ``load_llama(dir)`` reads ``config.json`` and the safetensors shards itself and builds
a module with the same attribute layout as ``transformers.LlamaForCausalLM`` (``model.model.layers[i].self_attn.
q_proj`` ...), so ``prune_model`` treats both alike. It implements LLaMA, Mistral, Qwen2 and Qwen3: RMSNorm, RoPE in
the ``rotate_half`` convention (default frequencies, or Llama 3.1's ``llama3`` or ``linear`` scaling), grouped-query
attention, SiLU gated MLP, untied or tied ``lm_head``, biases where the config has them (Qwen2's on q, k and v;
LLaMA's ``attention_bias`` and ``mlp_bias``), Qwen3's RMSNorm of each head of q and k; ``load_llama`` refuses a
config that asks for anything else (another model type, RoPE type or activation; see ``llama_config``).
Arithmetic is float32 by default (weights widened from the checkpoint's dtype).

Requires torch; the rest of ``zprune_client`` does not.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .llama_config import LINEAR_NAMES, LlamaConfig
from .wire import bf16_bits_to_float32

if TYPE_CHECKING:
    from numpy.typing import NDArray

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "LlamaConfig",
    "rope_inv_freq",
    "LlamaForCausalLM",
    "load_safetensors",
    "load_llama",
    "read_tokens",
    "calibration_windows",
    "eval_windows",
    "perplexity",
]

#: The safetensors dtypes read, those model/safetensors.ts reads: a checkpoint the CLI refuses is refused here too.
_ST_DTYPES: Dict[str, "np.dtype[Any]"] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
#: The torch dtype each of them is, for reading a tensor straight into a parameter of that dtype.
_TORCH_DTYPES: Dict[str, torch.dtype] = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class _Stored(NamedTuple):
    """One tensor of a safetensors file, as its header describes it."""

    name: str
    dtype: str  # the safetensors name: F32, F16 or BF16
    shape: Tuple[int, ...]
    start: int  # where its bytes begin in the file
    nbytes: int


def _safetensors_header(path: PathLike) -> List[_Stored]:
    """The tensors of a ``.safetensors`` file in the order of their bytes, its header checked (see
    ``load_safetensors``) and no tensor read."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        raw = f.read(n)
        if len(raw) < n:
            raise ValueError(f"{path}: header length {n} exceeds the file")
        try:
            header = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: its header is not JSON: {e}") from e
        data_len = os.fstat(f.fileno()).st_size - 8 - n
    if not isinstance(header, dict):
        raise ValueError(f"{path}: its header is not a JSON object")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{path}: its __metadata__ is not an object of strings")

    def counts(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)

    spans = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        meta = meta if isinstance(meta, dict) else {}
        dt = _ST_DTYPES.get(meta.get("dtype"))
        if dt is None:
            raise ValueError(f"{path}: tensor {name} has dtype {meta.get('dtype')}; only F32, F16 and BF16 are read")
        shape, offsets = meta.get("shape"), meta.get("data_offsets")
        if not counts(shape):
            raise ValueError(f"{path}: tensor {name} has shape {shape!r}, not a list of sizes")
        if not (counts(offsets) and len(offsets) == 2):
            raise ValueError(f"{path}: tensor {name} has data_offsets {offsets!r}, not [begin, end] in bytes")
        start, end = offsets
        if end - start != math.prod(shape) * dt.itemsize or end > data_len:
            raise ValueError(f"{path}: tensor {name} offsets [{start}, {end}] disagree with shape or file size")
        spans.append((start, end, name, meta["dtype"], tuple(shape)))
    spans.sort()
    at = 0
    for start, end, name, _, _ in spans:
        if start != at:
            raise ValueError(
                f"{path}: tensor {name} starts at byte {start} of the data, not {at}: tensors must follow each other "
                "without gaps or overlaps"
            )
        at = end
    if at != data_len:
        raise ValueError(f"{path}: {data_len - at} bytes of data follow the last tensor")
    return [_Stored(name, dtype, shape, 8 + n + start, end - start) for start, end, name, dtype, shape in spans]


def _read_stored(f: io.BufferedReader, path: PathLike, t: _Stored, into: Optional[NDArray[Any]] = None) -> NDArray[Any]:
    """The tensor ``t`` of the open file ``f``, read into an array of its own in its stored dtype (BF16 as uint16
    bits), in the machine's byte order; or into ``into``, a C-contiguous array of as many bytes, as they are stored
    (the machine's order on a little-endian machine)."""
    arr = np.empty(t.shape, dtype=_ST_DTYPES[t.dtype]) if into is None else into
    f.seek(t.start)
    if f.readinto(arr.reshape(-1).view(np.uint8).data) != t.nbytes:  # the file shrank since its header was read
        raise ValueError(f"{path}: tensor {t.name} ends past the end of the file")
    return arr if arr.dtype.isnative else arr.byteswap().view(arr.dtype.newbyteorder("="))


def load_safetensors(path: PathLike) -> Dict[str, NDArray[Any]]:
    """Reads a ``.safetensors`` file (8-byte little-endian header length, JSON header, raw data) into numpy arrays.

    F32 and F16 keep their types; BF16 is widened to float32. Raises ``ValueError`` naming the file for another
    dtype (F64 included, as model/safetensors.ts refuses it), and for a header the format's reference reader
    refuses (as model/safetensors.ts does too): not a JSON object, a ``__metadata__`` not of strings, a shape not of
    non-negative integers, offsets that do not hold exactly a tensor's bytes, or tensors that do not tile the data
    (gaps, overlaps, trailing bytes), which would read other bytes than the tensor's. Tensors are read one by one
    into their arrays: the file's bytes are not held beside them.
    """
    out: Dict[str, NDArray[Any]] = {}
    with open(path, "rb") as f:
        for t in _safetensors_header(path):
            arr = _read_stored(f, path, t)
            out[t.name] = bf16_bits_to_float32(arr) if t.dtype == "BF16" else arr
    return out


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight, computed in float32."""

    def __init__(self, dim: int, eps: float, **factory: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, **factory))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaAttention(nn.Module):
    """Causal grouped-query self-attention with RoPE. Query head h reads key/value head h // (heads / kv_heads)."""

    def __init__(self, cfg: LlamaConfig, **factory: Any) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        hidden, q_dim, kv_dim = cfg.hidden_size, self.heads * self.head_dim, self.kv_heads * self.head_dim
        bias = {name: name in cfg.biases for name in LINEAR_NAMES}
        self.q_proj = nn.Linear(hidden, q_dim, bias=bias["self_attn.q_proj"], **factory)  # (heads*hd, hidden)
        self.k_proj = nn.Linear(hidden, kv_dim, bias=bias["self_attn.k_proj"], **factory)  # (kv*hd, hidden)
        self.v_proj = nn.Linear(hidden, kv_dim, bias=bias["self_attn.v_proj"], **factory)  # (kv*hd, hidden)
        self.o_proj = nn.Linear(q_dim, hidden, bias=bias["self_attn.o_proj"], **factory)  # (hidden, heads*hd)
        # Qwen3: each head of q and of k normalised over its head_dim values before RoPE.
        self.q_norm: Optional[RMSNorm] = RMSNorm(self.head_dim, cfg.rms_norm_eps, **factory) if cfg.qk_norm else None
        self.k_norm: Optional[RMSNorm] = RMSNorm(self.head_dim, cfg.rms_norm_eps, **factory) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        attn = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (attn @ v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        projected: torch.Tensor = self.o_proj(out)
        return projected


class LlamaMLP(nn.Module):
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig, **factory: Any) -> None:
        super().__init__()
        hidden, inter = cfg.hidden_size, cfg.intermediate_size
        bias = {name: name in cfg.biases for name in LINEAR_NAMES}
        self.gate_proj = nn.Linear(hidden, inter, bias=bias["mlp.gate_proj"], **factory)  # (inter, hidden)
        self.up_proj = nn.Linear(hidden, inter, bias=bias["mlp.up_proj"], **factory)  # (inter, hidden)
        self.down_proj = nn.Linear(inter, hidden, bias=bias["mlp.down_proj"], **factory)  # (hidden, inter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return down


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: LlamaConfig, **factory: Any) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **factory)
        self.self_attn = LlamaAttention(cfg, **factory)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **factory)
        self.mlp = LlamaMLP(cfg, **factory)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        mlp_out: torch.Tensor = self.mlp(self.post_attention_layernorm(x))
        return x + mlp_out


def rope_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """RoPE's float32 inverse frequencies ``[head_dim / 2]`` with the config's scaling, as transformers computes them.

    ``linear`` divides them all by ``factor``; ``llama3`` divides the low frequencies (wavelength over
    ``original_max_position_embeddings / low_freq_factor``) by ``factor``, keeps the high ones (under ``... /
    high_freq_factor``) and blends those between.
    """
    hd = cfg.head_dim
    inv_freq: torch.Tensor = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    factor = float(s["factor"])
    if s["type"] == "linear":
        return inv_freq / factor
    low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
    orig = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > orig / low, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    between = ~(wavelen < orig / high) & ~(wavelen > orig / low)
    return torch.where(between, blended, scaled)


class LlamaModel(nn.Module):
    """Embeddings, decoder blocks and the final norm (transformers' ``LlamaModel``)."""

    def __init__(self, cfg: LlamaConfig, **factory: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, **factory)  # (vocab, hidden)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, **factory) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **factory)

    def rope(self, t: int, device: torch.device, dtype: torch.dtype) -> "tuple[torch.Tensor, torch.Tensor]":
        """cos and sin tables ``[t, head_dim]`` for positions 0..t-1 (HF's RoPE, computed in float32)."""
        freqs = torch.outer(torch.arange(t, device=device, dtype=torch.float32), rope_inv_freq(self.cfg).to(device))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.cfg.check_window(input_ids.shape[1])
        x = self.embed_tokens(input_ids)
        cos, sin = self.rope(input_ids.shape[1], x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        normed: torch.Tensor = self.norm(x)
        return normed


class LlamaForCausalLM(nn.Module):
    """``model(input_ids [b, t]) -> logits [b, t, vocab]``, laid out like transformers' ``LlamaForCausalLM``.

    ``device`` and ``dtype`` (keywords, as torch's modules take them) go to every parameter's constructor."""

    def __init__(self, cfg: LlamaConfig, **factory: Any) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg, **factory)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, **factory)  # (vocab, hidden)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Makes ``lm_head`` share the embedding's parameter when the config ties them, as transformers does: one
        tensor, not a copy of the largest one in small models."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.lm_head(self.model(input_ids))
        return logits


def load_llama(model_dir: PathLike, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """Builds a ``LlamaForCausalLM`` from a Hugging Face checkpoint directory (``config.json`` plus
    ``model.safetensors`` or sharded ``model.safetensors.index.json``), its weights converted to ``dtype``.

    Every shard's header is checked before the model is built, and the tensors' names and shapes against the
    model's before any is read; then each tensor is read into its parameter, one at a time: memory holds the model
    and one tensor, not the checkpoint beside the model.
    """
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = LlamaConfig.from_dict(json.load(f))
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        # transformers loads model.safetensors in preference to an index: which one is the model is a guess (the CLI's
        # loader refuses it too).
        if os.path.isfile(os.path.join(model_dir, "model.safetensors")):
            raise ValueError(f"checkpoint {model_dir} has both model.safetensors and model.safetensors.index.json: "
                             "transformers would load model.safetensors and ignore the index's shards; move away the "
                             "one that is not the model")
        with open(index, encoding="utf-8") as f:
            shards = list(json.load(f)["weight_map"].values())
        for name in shards:
            # Shards are files of the checkpoint directory (model/safetensors.ts refuses a path too). Checked before
            # sorting: a null or a number beside a string would fail the sort with a TypeError naming neither.
            if not isinstance(name, str) or name in (".", "..") or "/" in name or "\\" in name or not name:
                raise ValueError(f"{index}: weight_map names the shard {name!r}, not a file name in {model_dir}")
        files = sorted(set(shards))
    else:
        files = ["model.safetensors"]
    stored: Dict[str, Tuple[str, _Stored]] = {}
    for name in files:
        for t in _safetensors_header(os.path.join(model_dir, name)):
            # Which copy would win is up to the shard order (model/safetensors.ts refuses it too).
            if t.name in stored:
                raise ValueError(f"checkpoint {model_dir}: tensor {t.name} is in both {stored[t.name][0]} and {name}")
            stored[t.name] = (name, t)
    if cfg.tie_word_embeddings:
        # As transformers does: a stored lm_head is re-tied to the embedding, but one of another shape is refused.
        lm_head, embed = stored.pop("lm_head.weight", None), stored.get("model.embed_tokens.weight")
        if lm_head is not None and embed is not None and lm_head[1].shape != embed[1].shape:
            raise ValueError(f"checkpoint: tied lm_head.weight has shape {list(lm_head[1].shape)}, not "
                             f"{list(embed[1].shape)}")
    # Built on the meta device, then given uninitialised storage of ``dtype``: every parameter is read from the
    # checkpoint below, so neither the random initialisation nor a float32 model beside the ``dtype`` one (twice a
    # bfloat16 model's memory) is needed.
    model = LlamaForCausalLM(cfg, device="meta", dtype=dtype).to_empty(device="cpu")
    model.tie_weights()  # to_empty gives each module a tensor of its own: the tie is made again
    params = model.state_dict()  # detached tensors on the parameters' own storage, written in place below
    wanted = [k for k in params if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    missing = [k for k in wanted if k not in stored]
    unexpected = [k for k in stored if k not in params and "rotary_emb" not in k]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    for key in wanted:
        shard, t = stored[key]
        if t.shape != tuple(params[key].shape):
            raise ValueError(f"checkpoint {model_dir}: tensor {key} in {shard} has shape {list(t.shape)}, the "
                             f"model's is {list(params[key].shape)}")
    # Tensor by tensor, in each shard's order: memory holds the model and one tensor as stored, never the checkpoint
    # beside the model.
    with torch.no_grad():
        for key in sorted(wanted, key=lambda k: (stored[k][0], stored[k][1].start)):
            shard, t = stored[key]
            path = os.path.join(model_dir, shard)
            with open(path, "rb") as f:
                if params[key].dtype == _TORCH_DTYPES[t.dtype] and sys.byteorder == "little":
                    # Stored as the model holds it: read straight into the parameter, with no copy beside it.
                    _read_stored(f, path, t, params[key].view(torch.uint8).numpy())
                    continue
                arr = _read_stored(f, path, t)
            # BF16 bits as a bf16 tensor: copy_ converts it to the model's dtype as exactly as widening to float32
            # first did, without a float32 copy of the tensor.
            src = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16) if t.dtype == "BF16" else (
                torch.from_numpy(arr))
            params[key].copy_(src)
            del arr, src  # freed before the next tensor is read
    return model.eval()


def read_tokens(path: PathLike, dtype: Optional[str] = None) -> NDArray[Any]:
    """Reads a flat binary file of token ids as int64: by default little-endian uint32 for a name ending in ``.u32``
    (vocabularies past 65,536 ids), uint16 otherwise, as the CLI reads ``--calib-ids`` and ``--eval-ids`` (which
    also wants, for such a vocabulary, a name that says the width: ``.u16`` or ``.u32``)."""
    if dtype is None:
        dtype = "<u4" if os.fspath(path).lower().endswith(".u32") else "<u2"
    # np.fromfile drops a ragged tail without a word; the CLI refuses it.
    width = np.dtype(dtype).itemsize
    if os.path.getsize(path) % width:
        raise ValueError(f"{path}: byte length is not a multiple of {width} for {np.dtype(dtype).name} ids")
    return np.fromfile(path, dtype=np.dtype(dtype)).astype(np.int64)


def _check_whole(name: str, value: Any, least: int, also: str = "") -> None:
    """Raises ValueError unless ``value`` is an integer (not a bool) of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}{also}, got {value!r}")


def calibration_windows(ids: NDArray[Any], starts: Sequence[int], seq_len: int = 256) -> torch.Tensor:
    """``[len(starts), seq_len]`` token windows ``ids[s : s + seq_len]``; ValueError, as the CLI's ``--calib-starts``
    check, for a window that does not lie inside ``ids`` (numpy would cut it short, or wrap a negative start)."""
    _check_whole("seq_len", seq_len, 1)
    if len(starts) == 0:
        raise ValueError("calibration_windows needs at least one window start")
    for i, s in enumerate(starts):
        start, where = int(s), f"window {i} (of {len(starts)})"
        if start < 0:
            raise ValueError(f"{where}: its start {start} is negative")
        if start + seq_len > len(ids):
            raise ValueError(f"{where}: its start {start} + {seq_len} tokens runs past the {len(ids)} tokens there are")
    return torch.from_numpy(np.stack([ids[int(s) : int(s) + seq_len] for s in starts]).astype(np.int64))


def eval_windows(ids: NDArray[Any], seq_len: int = 256, limit: Optional[int] = None) -> torch.Tensor:
    """Consecutive non-overlapping windows of ``seq_len`` tokens (the tail dropped), the first ``limit`` of them;
    ValueError where that is none, or a window too short to predict a token (``perplexity`` would divide by 0)."""
    _check_whole("seq_len", seq_len, 2)
    if limit is not None:
        _check_whole("limit", limit, 1, " or None")
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"the ids hold {len(ids)} tokens: not one window of {seq_len}")
    if limit is not None:
        n = min(n, limit)
    return torch.from_numpy(np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len))


def batches(windows: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Splits ``[n, t]`` windows into batches of at most ``batch_size``."""
    for i in range(0, windows.shape[0], batch_size):
        yield windows[i : i + batch_size]


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> float:
    """exp(mean next-token cross-entropy) over the ``t - 1`` predicted positions of every window ``[n, t]``; ValueError
    for windows that predict nothing (none, or of one token)."""
    if windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError(f"perplexity needs windows [n >= 1, t >= 2] to predict a token, got {list(windows.shape)}")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches(windows, batch_size):
        logits = model(batch)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train(was_training)
    return math.exp(total / count)
