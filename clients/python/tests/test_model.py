"""``prune_model`` on the bundled zp-llama-9m reproduces reference.json's perplexities on the first 64 windows.

Calibration: 64 windows of 256 tokens of ``calib_ids.u16`` at the offsets in ``calib_starts_seed0.i64``; evaluation:
the first 64 non-overlapping 256-token windows of ``test_ids.u16``; float32 arithmetic from the float16 weights
(models/zp-llama-9m/README in shared/README.md). The expected figures are read from ``reference.json``.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import numpy as np
import pytest

from conftest import CORPUS_DIR, MODEL_DIR

torch = pytest.importorskip("torch")

from zprune_client import LLAMA_LINEARS, prune_model  # noqa: E402
from zprune_client.llama import (  # noqa: E402
    calibration_windows,
    eval_windows,
    load_llama,
    perplexity,
    read_tokens,
)

SEQ = 256
WINDOWS = 64
REL_TOL = 0.005


@pytest.fixture(scope="module")
def reference() -> Dict[str, Any]:
    path = MODEL_DIR / "reference.json"
    assert path.exists(), f"the bundled model is missing: {path} (copied into the repo by the models task)"
    return dict(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def data() -> Dict[str, Any]:
    calib = read_tokens(CORPUS_DIR / "calib_ids.u16")
    starts = np.fromfile(CORPUS_DIR / "calib_starts_seed0.i64", dtype="<i8")
    assert len(starts) >= WINDOWS
    return {
        "calib": calibration_windows(calib, starts[:WINDOWS], SEQ),
        "test": eval_windows(read_tokens(CORPUS_DIR / "test_ids.u16"), SEQ, WINDOWS),
    }


def test_dense_perplexity(reference: Dict[str, Any], data: Dict[str, Any]) -> None:
    model = load_llama(MODEL_DIR)
    ppl = perplexity(model, data["test"], batch_size=16)
    assert ppl == pytest.approx(reference["dense_ppl"][1], rel=REL_TOL)


def test_prune_model_zpruner_layer(server_url: str, reference: Dict[str, Any], data: Dict[str, Any]) -> None:
    model = load_llama(MODEL_DIR)
    batches = list(data["calib"].split(16))
    report = prune_model(
        model, batches, server_url, method="zpruner", pattern="layer", sparsity=reference["sparsity"], progress=False
    )
    nblocks = len(model.model.layers)
    assert len(report.stats) == nblocks * len(LLAMA_LINEARS)
    for i in range(nblocks):
        for name in LLAMA_LINEARS:
            lin = model.model.layers[i].get_submodule(name)
            stats = report.stats[f"model.layers.{i}.{name}"]
            assert stats["pruned"] == int(reference["sparsity"] * lin.weight.numel())
            assert int((lin.weight == 0).sum()) >= stats["pruned"], "masks are applied in place"
    ppl = perplexity(model, data["test"], batch_size=16)
    assert ppl == pytest.approx(reference["ppl"]["zpruner/layer"][1], rel=REL_TOL)
