"""The ``config.json`` fields a LLaMA forward pass needs, read without torch, refusing what it cannot run faithfully.

Kept apart from ``llama`` (which needs torch) so that the same checks as model/config.ts run, and are tested,
wherever the client is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

__all__ = ["LlamaConfig", "SUPPORTED_MODEL_TYPES"]

#: ``model_type``s whose forward pass is exactly this one (Qwen2's is LLaMA's with a bias on q, k and v, Qwen3's with
#: an RMSNorm of each head of q and k). Others reuse LLaMA's tensor names with a different computation (Granite's
#: multipliers, SmolLM3's layers without RoPE, Gemma's activation and norms), so their weights would load and run,
#: silently wrong.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")

#: transformers' config class of each supported ``model_type``, to name the source of a default.
_CONFIG_CLASS = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}

#: The seven linear layers of a transformers LLaMA decoder block, as model/config.ts's LINEAR_NAMES: attention's
#: four, then the MLP's three (``prune_model`` sends them in this order, as ``LLAMA_LINEARS``).
LINEAR_NAMES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _positive_int(cfg: Dict[str, Any], key: str, fallback: Optional[int] = None) -> int:
    value = cfg.get(key)
    if value is None:
        value = fallback
    # JSON has one number type: 4096.0 is the integer 4096, as model/config.ts reads it.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


def _rope_scaling(rope_type: Any, fields: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The RoPE scaling ``rope_type`` asks for, read from ``fields`` (see model/config.ts parseRopeScaling)."""
    if rope_type in (None, "default"):
        return None

    def number(key: str, ok: Any, what: str) -> float:
        value = fields.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ValueError(f"config.json: rope_type {rope_type} needs {key}, {what}; got {value!r}")
        return float(value)

    def positive(v: float) -> bool:
        return math.isfinite(v) and v > 0

    if rope_type == "linear":
        return {"type": "linear", "factor": number("factor", positive, "a positive number")}
    if rope_type == "llama3":
        low = number("low_freq_factor", positive, "a positive number")
        return {
            "type": "llama3",
            "factor": number("factor", positive, "a positive number"),
            "low_freq_factor": low,
            # Equal factors would leave no band to blend across (and divide by zero in it).
            "high_freq_factor": number(
                "high_freq_factor", lambda v: math.isfinite(v) and v > low, "over low_freq_factor"
            ),
            "original_max_position_embeddings": int(
                number(
                    "original_max_position_embeddings",
                    lambda v: float(v).is_integer() and v > 0,
                    "a positive integer",
                )
            ),
        }
    if rope_type == "dynamic":
        # The default RoPE for every window up to max_position_embeddings, the longest one the forward pass runs
        # (from_dict checks the rest): transformers still needs its factor.
        number("factor", positive, "a positive number")
        return None
    # yarn and longrope (attention scaling, and frequencies of their own).
    raise ValueError(f"config.json: rope_type {rope_type} is not supported (default, linear, llama3 and dynamic only)")


@dataclass
class LlamaConfig:
    """The fields of a transformers ``config.json`` this implementation uses."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    #: The linear layers with a bias (Qwen2's q, k and v; LLaMA's per attention_bias and mlp_bias).
    biases: Tuple[str, ...] = ()
    #: Qwen3's RMSNorm of each head of q and k (weights of head_dim), between their products and RoPE.
    qk_norm: bool = False
    #: Mistral's attention window (Qwen2's and Qwen3's with use_sliding_window); the forward pass refuses longer
    #: windows (it attends to whole windows).
    sliding_window: Optional[int] = None
    #: The longest window the model was trained on; the forward pass refuses longer ones (as model/llama.ts does).
    #: ``from_dict`` gives transformers' default when config.json leaves it out, None when it is null.
    max_position_embeddings: Optional[int] = None
    #: RoPE frequency scaling: ``{"type": "linear", "factor"}`` or ``{"type": "llama3", "factor",
    #: "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}``; None for the default RoPE (and
    #: ``dynamic``, the same up to ``max_position_embeddings``).
    rope_scaling: Optional[Dict[str, Any]] = None
    #: The config.json keys left out and taken at transformers' defaults (named in the window refusals).
    defaulted: Tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, cfg: Dict[str, Any]) -> "LlamaConfig":
        """Reads a config map; RoPE theta from ``rope_parameters.rope_theta``, else ``rope_theta``, else 10000.

        Raises ``ValueError`` for what this model does not implement (as model/config.ts does): another
        ``model_type``, quantized weights, RoPE scaling other than ``linear``, ``llama3`` and ``dynamic`` (which is
        the default RoPE up to ``max_position_embeddings``), partial RoPE, an activation other than SiLU, biases on
        Mistral. Their weights would load all the same, and the model would run, silently different from the
        checkpoint's. ``max_position_embeddings`` left out is transformers' default (2048, Mistral's 4096 * 32,
        Qwen2's and Qwen3's 32768).
        """
        # null counts as absent throughout (max_position_embeddings aside, see below), as in model/config.ts.
        model_type = cfg.get("model_type")
        if model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"config.json: model_type {model_type!r} is not supported ({', '.join(SUPPORTED_MODEL_TYPES)} only)"
            )
        kind = model_type or "llama"
        if cfg.get("quantization_config") is not None:
            raise ValueError("config.json: quantized checkpoints are not supported")
        raw_params = cfg.get("rope_parameters")
        if raw_params is not None and not isinstance(raw_params, dict):
            raise ValueError(f"config.json: rope_parameters must be an object, got {raw_params!r}")
        params: Dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        # As model/config.ts: one RoPE for every layer, and one place for it.
        if any(isinstance(v, dict) for v in params.values()):
            raise ValueError(
                "config.json: rope_parameters per layer type is not supported (one RoPE for all layers only)"
            )
        scaling = cfg.get("rope_scaling")
        if raw_params is not None and scaling is not None:
            # What one leaves out the other may give; the same scaling written in both places is that scaling.
            agree = isinstance(scaling, dict) and (
                params.get("rope_type") is None
                or params.get("rope_type") == (scaling.get("rope_type") or scaling.get("type"))
            ) and all(
                k in ("type", "rope_type") or params.get(k) is None or params.get(k) == v for k, v in scaling.items()
            )
            if not agree:
                raise ValueError(f"config.json: rope_parameters {raw_params!r} and rope_scaling {scaling!r} disagree; "
                                 "keep the one that applies")
        rope_type = params.get("rope_type")
        if rope_type is None and scaling is not None:
            # An object without a type still asks for scaling (its factor); anything but an object is not a config.
            named = [scaling.get("rope_type"), scaling.get("type")] if isinstance(scaling, dict) else []
            rope_type = next((t for t in named if t is not None), "(none)")
        # Newer transformers keep the scaling's fields beside rope_type in rope_parameters, older ones in rope_scaling.
        fields = params if params.get("rope_type") is not None else scaling if isinstance(scaling, dict) else {}
        rope_scaling = _rope_scaling(rope_type, fields)
        partial = params.get("partial_rotary_factor")
        if partial is None:
            partial = cfg.get("partial_rotary_factor")
        if partial is None:
            partial = 1
        if partial != 1:
            raise ValueError(f"config.json: partial_rotary_factor {partial!r} is not supported (only 1)")
        # transformers' LlamaAttention and LlamaMLP have a bias on all their layers where attention_bias and mlp_bias
        # say so; Qwen2Attention one on q, k and v (none on o) and Qwen2MLP none, whatever those keys say; Mistral's
        # layers none, so a file that asks for one is refused (as model/config.ts). Qwen3Attention has one on its four
        # where attention_bias says so; Qwen3MLP none.
        biases = LINEAR_NAMES[:3] if kind == "qwen2" else ()
        for key, names in (("attention_bias", LINEAR_NAMES[:4]), ("mlp_bias", LINEAR_NAMES[4:])):
            if kind == "qwen2" or (kind == "qwen3" and key == "mlp_bias") or cfg.get(key) is not True:
                continue
            if kind == "mistral":
                raise ValueError(f"config.json: {key} is not supported for mistral (no biases)")
            biases += names
        act = cfg.get("hidden_act")
        if act not in (None, "silu", "swish"):  # transformers' ACT2FN maps "swish" to SiLU too
            raise ValueError(f"config.json: hidden_act {act!r} is not supported (only silu)")
        # Mistral's attention uses the window (4096 when config.json leaves it out), Qwen2's only with
        # use_sliding_window (taken as on every layer, as model/config.ts); LLaMA's ignores the key.
        windowed = kind == "mistral" or (kind in ("qwen2", "qwen3") and cfg.get("use_sliding_window") is True)
        window: Optional[int] = None
        if windowed:
            if "sliding_window" not in cfg:
                window = 4096
            elif cfg["sliding_window"] is not None:
                window = _positive_int(cfg, "sliding_window")
        # Left out, transformers' LlamaConfig and MistralConfig take their defaults; null (which transformers 4 keeps
        # as None, and whose default RoPE never reads it) leaves windows unbounded, as in model/config.ts.
        max_positions: Optional[int] = None
        if "max_position_embeddings" not in cfg:
            max_positions = {"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768, "qwen3": 32768}[kind]
        elif cfg["max_position_embeddings"] is not None:
            max_positions = _positive_int(cfg, "max_position_embeddings")
        # null counts as absent, 0 does not (it was taken for 10000): a theta of 0, under 0 or not a number gives NaN
        # rotations, a negative epsilon NaN norms, as model/config.ts refuses them.
        theta = params.get("rope_theta")
        if theta is None:
            theta = cfg.get("rope_theta")
        if theta is None:
            theta = 10000.0
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not (0 < theta < math.inf):
            raise ValueError(f"config.json: rope_theta must be a positive number, got {theta!r}")
        eps = cfg.get("rms_norm_eps")
        if eps is None:
            eps = 1e-6
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 <= eps < math.inf):
            raise ValueError(f"config.json: rms_norm_eps must be a number of at least 0, got {eps!r}")
        heads = _positive_int(cfg, "num_attention_heads")
        # Left out, MistralConfig takes 8, Qwen2Config and Qwen3Config 32, LlamaConfig num_attention_heads; null is
        # num_attention_heads in all four.
        kv_default = {"llama": None, "mistral": 8, "qwen2": 32, "qwen3": 32}[kind]
        kv_defaulted = kv_default is not None and "num_key_value_heads" not in cfg
        kv_heads = _positive_int(cfg, "num_key_value_heads", kv_default if kv_defaulted else heads)
        if heads % kv_heads != 0:
            raise ValueError(
                f"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
                + (f" ({_CONFIG_CLASS[kind]}'s default, as num_key_value_heads is absent)" if kv_defaulted else "")
            )
        hidden = _positive_int(cfg, "hidden_size")
        # Qwen3Config's head_dim is 128 when left out, the others' hidden_size // num_attention_heads.
        head_dim = _positive_int(cfg, "head_dim", 128 if kind == "qwen3" else hidden // heads)
        if head_dim % 2 != 0:
            raise ValueError(f"config.json: head_dim {head_dim} must be even for RoPE")
        if rope_type == "dynamic":
            # transformers builds the frequencies of a window of max_position_embeddings tokens, base * 1 ** (head_dim
            # / (head_dim - 2)) = base, and again only for longer windows, which check_window refuses;
            # original_max_position_embeddings does not enter. Without the length, or with a head_dim of 2 (a division
            # by zero), it cannot build the RoPE at all (see model/config.ts).
            if max_positions is None:
                raise ValueError(
                    "config.json: rope_type dynamic needs max_position_embeddings, the window length up to which it "
                    "is the default RoPE; got None"
                )
            if head_dim == 2:
                raise ValueError("config.json: rope_type dynamic needs a head_dim over 2, got 2")
        return cls(
            vocab_size=_positive_int(cfg, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_positive_int(cfg, "intermediate_size"),
            num_hidden_layers=_positive_int(cfg, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(eps),
            rope_theta=float(theta),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            biases=biases,
            qk_norm=kind == "qwen3",
            sliding_window=window,
            max_position_embeddings=max_positions,
            rope_scaling=rope_scaling,
            defaulted=tuple(
                key for key, left_out in (
                    ("num_key_value_heads", kv_defaulted),
                    ("sliding_window", windowed and "sliding_window" not in cfg),
                    ("max_position_embeddings", "max_position_embeddings" not in cfg),
                ) if left_out
            ),
        )

    def check_window(self, tokens: int) -> None:
        """Raises ``ValueError`` when windows of ``tokens`` are longer than the sliding window or than
        ``max_position_embeddings`` (positions the model was not trained on, and where ``dynamic`` RoPE would
        rescale; see model/llama.ts)."""
        def source(key: str) -> str:
            # A limit config.json does not state is transformers' default: said so, as model/llama.ts does.
            return f" (transformers' default: config.json leaves {key} out)" if key in self.defaulted else ""

        if self.sliding_window is not None and tokens > self.sliding_window:
            raise ValueError(
                f"windows of {tokens} tokens are longer than the model's sliding_window of {self.sliding_window}"
                f"{source('sliding_window')}: this forward pass has no sliding-window attention"
            )
        limit = self.max_position_embeddings
        if limit is not None and tokens > limit:
            raise ValueError(
                f"windows of {tokens} tokens are longer than the model's max_position_embeddings of {limit}"
                f"{source('max_position_embeddings')}: it was not trained on positions past it"
            )
