"""``zprune_client.llama`` refuses configs it cannot run faithfully, as model/config.ts does: an activation other than
SiLU, or biased linear layers. Running them anyway would give a silently different model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import MODEL_DIR

pytest.importorskip("torch")

from zprune_client.llama import LlamaConfig, load_llama  # noqa: E402

BASE: Dict[str, Any] = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "vocab_size": 100,
}

REFUSED = [
    ({"hidden_act": "gelu_pytorch_tanh"}, "hidden_act"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
]


@pytest.mark.parametrize("extra,key", REFUSED)
def test_from_dict_refuses_what_the_model_does_not_implement(extra: Dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        LlamaConfig.from_dict({**BASE, **extra})


def test_from_dict_accepts_silu_and_explicitly_absent_biases() -> None:
    # null counts as absent, as in model/config.ts
    for extra in ({}, {"hidden_act": None}, {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False}):
        assert LlamaConfig.from_dict({**BASE, **extra}).head_dim == 16


def test_load_llama_refuses_before_building_the_model(tmp_path: Path) -> None:
    # The bundled model's config with a GELU activation: its weights load (same names and shapes), which is
    # exactly why the activation has to be checked.
    config = json.loads((MODEL_DIR / "config.json").read_text())
    config["hidden_act"] = "gelu_pytorch_tanh"
    (tmp_path / "config.json").write_text(json.dumps(config))
    for f in MODEL_DIR.glob("model*.safetensors*"):
        (tmp_path / f.name).symlink_to(f)
    with pytest.raises(ValueError, match="hidden_act"):
        load_llama(tmp_path)
