"""Every golden case through ``prune_layer`` (numpy and torch inputs, every dtype) against the live server.

A golden answer is correct when it has exactly ``pruned`` bits set and equals ``mask`` wherever ``ambiguous`` is 0
(tests/fixtures/golden, made by an independent float64 implementation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import msgpack
import numpy as np
import pytest

from conftest import GOLDEN
from zprune_client import ZpruneClient, float32_to_bf16_bits, prune_layer, prune_layers
from zprune_client.wire import bf16_bits_to_float32, decode_tensor, unpack_mask

CASES = sorted(p.name[: -len(".request.msgpack")] for p in GOLDEN.glob("*.request.msgpack"))


def load_case(name: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    req = msgpack.unpackb((GOLDEN / f"{name}.request.msgpack").read_bytes(), raw=False)
    exp = msgpack.unpackb((GOLDEN / f"{name}.expected.msgpack").read_bytes(), raw=False)
    return req, exp


def assert_golden(mask: np.ndarray, stats: Dict[str, Any], exp: Dict[str, Any]) -> None:
    shape = tuple(exp["shape"])
    assert mask.shape == shape and mask.dtype == np.bool_
    want = unpack_mask(exp["mask"], shape)
    ambiguous = unpack_mask(exp["ambiguous"], shape)
    assert int(mask.sum()) == exp["pruned"], "wrong number of pruned weights"
    wrong = (mask != want) & ~ambiguous
    assert not wrong.any(), f"{int(wrong.sum())} unambiguous positions differ, first at {np.argwhere(wrong)[0]}"
    assert stats["pruned"] == exp["pruned"] and stats["total"] == exp["total"]
    if exp.get("alpha") is not None:
        assert stats["alpha"] == pytest.approx(exp["alpha"], rel=1e-5)


def call_kwargs(req: Dict[str, Any]) -> Dict[str, Any]:
    kw: Dict[str, Any] = {"method": req.get("method", "zpruner"), "pattern": req.get("pattern", "layer")}
    if req.get("sparsity") is not None:
        kw["sparsity"] = req["sparsity"]
    return kw


def act_of(layer: Dict[str, Any]) -> Any:
    return decode_tensor(layer["actNormSq"]) if layer.get("actNormSq") else None


def as_torch(torch: Any, arr: np.ndarray, dtype: str) -> Any:
    """The golden weight as the torch tensor a user would hold: f32, f16 or bf16 (from its raw bits).

    ``torch`` is passed in: only the tests that use it import it, so the others run where it is not installed.
    """
    if dtype == "bf16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(arr.copy())


@pytest.mark.parametrize("name", CASES)
def test_golden_numpy(server_url: str, name: str) -> None:
    req, exp = load_case(name)
    layer = req["layers"][0]
    w = decode_tensor(layer["weight"])
    dtype = layer["weight"]["dtype"]
    mask, stats = prune_layer(
        w, act_of(layer), url=server_url, name=layer["name"], dtype="bf16" if dtype == "bf16" else None,
        **call_kwargs(req),
    )
    assert_golden(mask, stats, exp)


@pytest.mark.parametrize("name", CASES)
def test_golden_torch(server_url: str, name: str) -> None:
    torch = pytest.importorskip("torch")
    req, exp = load_case(name)
    layer = req["layers"][0]
    w = as_torch(torch, decode_tensor(layer["weight"]), layer["weight"]["dtype"])
    act = act_of(layer)
    mask, stats = prune_layer(
        w, None if act is None else torch.from_numpy(act.copy()), url=server_url, **call_kwargs(req)
    )
    assert_golden(mask, stats, exp)


@pytest.mark.parametrize("name", CASES)
def test_golden_raw_body(server_url: str, name: str) -> None:
    """The golden request bytes exactly as stored, through ``prune_raw``."""
    _, exp = load_case(name)
    answer = ZpruneClient(server_url).prune_raw((GOLDEN / f"{name}.request.msgpack").read_bytes())
    layer = answer["layers"][0]
    assert layer["name"] == exp["name"] and list(layer["shape"]) == list(exp["shape"])
    assert_golden(unpack_mask(layer["mask"], exp["shape"]), layer["stats"], exp)


def test_golden_cases_in_one_request(server_url: str) -> None:
    """``prune_layers`` with several golden layers of the same method/pattern answers each in order."""
    names = ["zpruner-layer-f16", "zpruner-layer-f32-ties", "tiny-zpruner-layer-f32"]
    cases = [load_case(n) for n in names]
    # each golden case has its own sparsity; the layer pattern shares one per request, so send 0.5 cases only
    same = [(r, e) for r, e in cases if r.get("sparsity") == 0.5]
    assert len(same) >= 2
    specs: List[Dict[str, Any]] = []
    for r, _ in same:
        layer = r["layers"][0]
        specs.append({"name": layer["name"], "weight": decode_tensor(layer["weight"]), "act_norm_sq": act_of(layer)})
    result = prune_layers(specs, url=server_url, method="zpruner", pattern="layer", sparsity=0.5)
    assert [layer.name for layer in result.layers] == [s["name"] for s in specs]
    for got, (_, e) in zip(result.layers, same):
        assert_golden(got.mask, got.stats, e)
    assert result.backend in ("cpu", "webgpu")
    assert set(result.timings) >= {"decodeMs", "computeMs", "encodeMs", "totalMs"}


# -- every input kind in every dtype agrees ----------------------------------------------------------------------

DTYPE_CASE = "zpruner-layer-f32-ties"  # f32 weights with exact ties: a sensitive check of identical encoding


def encodings(torch: Any, w32: np.ndarray, dtype: str) -> Dict[str, Tuple[Any, Any]]:
    """The same weights in ``dtype`` as numpy and as torch; returns {label: (weight, dtype keyword)}."""
    t32 = torch.from_numpy(w32.copy())
    if dtype == "f32":
        return {"numpy": (w32, None), "torch": (t32, None)}
    if dtype == "f16":
        return {
            "numpy": (w32.astype(np.float16), None),
            "torch": (t32.half(), None),
            "numpy f32 sent as f16": (w32, "f16"),
        }
    bits = float32_to_bf16_bits(w32)
    return {
        "numpy bits": (bits, "bf16"),
        "numpy int16 bits": (bits.view(np.int16), "bf16"),
        "torch": (t32.to(torch.bfloat16), None),
        "numpy f32 sent as bf16": (w32, "bf16"),
    }


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_numpy_and_torch_agree(server_url: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    req, _ = load_case(DTYPE_CASE)
    layer = req["layers"][0]
    w32 = decode_tensor(layer["weight"]).astype(np.float32)
    act = act_of(layer)
    masks = {}
    for label, (w, kw_dtype) in encodings(torch, w32, dtype).items():
        mask, stats = prune_layer(w, act, url=server_url, dtype=kw_dtype, **call_kwargs(req))
        assert stats["total"] == w32.size
        masks[label] = mask
    first = next(iter(masks.values()))
    for label, mask in masks.items():
        assert np.array_equal(mask, first), f"{dtype}: {label} differs from {next(iter(masks))}"


def test_bf16_rounding_matches_torch() -> None:
    """``float32_to_bf16_bits`` rounds exactly as torch does (round to nearest even)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(10000).astype(np.float32) * 3, np.float32([0, -0.0, 1e-40, 3.4e38])])
    ours = float32_to_bf16_bits(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours, theirs)
    assert np.array_equal(bf16_bits_to_float32(ours), torch.from_numpy(x).to(torch.bfloat16).float().numpy())


def test_golden_files_present() -> None:
    assert len(CASES) >= 10, f"expected the golden fixtures in {GOLDEN}"
    assert all(Path(GOLDEN / f"{n}.expected.msgpack").exists() for n in CASES)
