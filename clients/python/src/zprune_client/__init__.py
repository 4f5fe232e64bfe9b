"""Python client for zprune: prune LLM linear layers with Z-Pruner (and Wanda, RIA, magnitude) on a zprune server.

Quick start::

    from zprune_client import apply_mask, prune_layer
    mask, stats = prune_layer(weight, act_norm_sq, sparsity=0.5, url="http://127.0.0.1:8787")
    apply_mask(weight, mask)   # numpy array or torch tensor

``prune_layers`` sends several layers in one request, ``prune_model`` prunes a whole PyTorch LLaMA-family model
block by block (needs torch), and ``zprune_client.llama`` loads a Hugging Face LLaMA checkpoint without
transformers. Every server error is raised as ``ZpruneError(code, message, status)``.
"""

__version__ = "0.1.0"

from .client import (  # noqa: E402  (the version must exist before client imports it)
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    Layer,
    LayerResult,
    PruneResult,
    ZpruneClient,
    ZpruneError,
    prune_layer,
    prune_layers,
)
from .model import LAYER_RULES, LLAMA_LINEARS, ModelPruneReport, mask_at_most_kth, prune_model  # noqa: E402
from .wire import apply_mask, bf16_bits_to_float32, float32_to_bf16_bits, pack_mask, unpack_mask  # noqa: E402

__all__ = [
    "__version__",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "Layer",
    "LayerResult",
    "PruneResult",
    "ZpruneClient",
    "ZpruneError",
    "prune_layer",
    "prune_layers",
    "prune_model",
    "ModelPruneReport",
    "LLAMA_LINEARS",
    "LAYER_RULES",
    "mask_at_most_kth",
    "apply_mask",
    "bf16_bits_to_float32",
    "float32_to_bf16_bits",
    "pack_mask",
    "unpack_mask",
]
