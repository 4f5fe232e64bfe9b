"""``prune_model`` on the bundled zp-llama-9m reproduces reference.json's perplexities on the first 64 windows.

Calibration: 64 windows of 256 tokens of ``calib_ids.u16`` at the offsets in ``calib_starts_seed0.i64``; evaluation:
the first 64 non-overlapping 256-token windows of ``test_ids.u16``; float32 arithmetic from the float16 weights
(models/zp-llama-9m/README in shared/README.md). The expected figures are read from ``reference.json``.
"""

from __future__ import annotations

import errno
import json
import math
import re
import struct
from fractions import Fraction
from typing import Any, Dict, List

import numpy as np
import pytest

from conftest import CORPUS_DIR, MODEL_DIR

torch = pytest.importorskip("torch")

from zprune_client import (  # noqa: E402
    LLAMA_LINEARS,
    Layer,
    ZpruneClient,
    ZpruneError,
    mask_at_most_kth,
    prune_model,
)
from zprune_client.llama import (  # noqa: E402
    calibration_windows,
    eval_windows,
    load_llama,
    perplexity,
    read_tokens,
)
from zprune_client.model import _resume_advice, _stopped_at, _working_bytes  # noqa: E402
from zprune_client.wire import encode_request  # noqa: E402

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


# The reference pruned every score <= the (k+1)-th lowest (layer_rule "le-kth"): so rebuilt, the masks are its own and
# the perplexity its to float32 rounding; the contract's exactly k ("exact") lands 4e-4 below it.
@pytest.mark.parametrize("layer_rule,rel", [("exact", REL_TOL), ("le-kth", 1e-5)])
def test_prune_model_zpruner_layer(
    server_url: str, reference: Dict[str, Any], data: Dict[str, Any], layer_rule: str, rel: float
) -> None:
    model = load_llama(MODEL_DIR)
    batches = list(data["calib"].split(16))
    report = prune_model(
        model, batches, server_url, method="zpruner", pattern="layer", sparsity=reference["sparsity"], progress=False,
        layer_rule=layer_rule,
    )
    nblocks = len(model.model.layers)
    assert len(report.stats) == nblocks * len(LLAMA_LINEARS)
    for i in range(nblocks):
        for name in LLAMA_LINEARS:
            lin = model.model.layers[i].get_submodule(name)
            stats = report.stats[f"model.layers.{i}.{name}"]
            k = int(reference["sparsity"] * lin.weight.numel())
            if layer_rule == "exact":
                assert stats["pruned"] == k
            else:
                assert stats["pruned"] > k and stats["threshold"] >= 0
            assert int((lin.weight == 0).sum()) >= stats["pruned"], "masks are applied in place"
    ppl = perplexity(model, data["test"], batch_size=16)
    assert ppl == pytest.approx(reference["ppl"]["zpruner/layer"][1], rel=rel)


def tiny_llama(seed: int = 0) -> Any:
    from zprune_client.llama import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("pattern", ["row", "2:4"])
def test_cached_inputs_match_full_passes(server_url: str, pattern: str) -> None:
    """``cache_inputs=True`` (one block at a time) prunes exactly the weights the full passes prune."""
    import copy

    full = tiny_llama()
    cached = copy.deepcopy(full)
    batches = list(torch.randint(0, 97, (6, 32), generator=torch.Generator().manual_seed(1)).split(4))
    kw = dict(method="wanda", pattern=pattern, sparsity=0.5, progress=False)
    r1 = prune_model(full, batches, server_url, **kw)
    calls = [0] * len(cached.model.layers)
    hooks = [b.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, b in enumerate(cached.model.layers)]
    r2 = prune_model(cached, batches, server_url, cache_inputs=True, **kw)
    for h in hooks:
        h.remove()
    # Each block runs once per batch to collect its inputs and once to feed the next block, the last only to collect.
    assert calls == [2 * len(batches)] * (len(calls) - 1) + [len(batches)]
    assert r1.pruned == r2.pruned == r1.total // 2
    for (n1, p1), (n2, p2) in zip(full.named_parameters(), cached.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    assert "forward" not in cached.model.layers[0].__dict__, "the capture hook is gone"


def test_mask_at_most_kth_prunes_every_score_up_to_the_sorted_kth() -> None:
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 200))
        # Few distinct values (zeros of both signs among them) for ties, or continuous ones.
        pool = np.array([0.0, -0.0, *rng.random(int(rng.integers(1, 6)))], dtype=np.float32)
        flat = rng.choice(pool, n) if trial % 2 else rng.random(n).astype(np.float32)
        score = flat.reshape(1, n) if trial % 3 else flat.reshape(n, 1)
        for k in (0, int(rng.integers(0, n)), n - 1, n):
            mask, threshold = mask_at_most_kth(score, k)
            ordered = sorted(float(x) for x in flat)  # the reference code's sort, spelled out
            limit = ordered[k] if k < n else math.inf
            want = np.array([float(x) <= limit for x in flat]).reshape(score.shape)
            assert mask.shape == score.shape and np.array_equal(mask, want), (trial, k)
            assert int(mask.sum()) >= min(k + 1, n)
            assert threshold == max(float(x) for x in flat[want.ravel()]) and math.copysign(1, threshold) == 1
    with pytest.raises(ValueError, match="k = -1"):
        mask_at_most_kth(np.ones(3, dtype=np.float32), -1)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"score\[1\] is .*, not a finite score >= 0"):
            mask_at_most_kth(np.array([1.0, bad, 2.0], dtype=np.float32), 0)


def test_prune_model_layer_rule_refusals(server_url: str) -> None:
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(6))]
    with pytest.raises(ValueError, match=r"layer_rule must be one of \('exact', 'le-kth'\), got 'le_kth'"):
        prune_model(tiny_llama(6), batches, server_url, sparsity=0.5, layer_rule="le_kth", progress=False)
    with pytest.raises(ValueError, match=r"layer_rule 'le-kth' applies to pattern 'layer', not 'row'"):
        prune_model(tiny_llama(6), batches, server_url, pattern="row", sparsity=0.5, layer_rule="le-kth",
                    progress=False)
    # A server whose scores are not scores (one made negative, or none): the mask cannot be rebuilt from them.
    for score, words in [(-1.0, r"score\[3\] is -1.0, not a finite score >= 0"), (None, "no f32 score of each weight")]:
        client = ZpruneClient(server_url)
        real = client.prune_layers

        def spoilt(*args: Any, real: Any = real, score: Any = score, **kwargs: Any) -> Any:
            assert kwargs["returns"] == ("mask", "score")
            result = real(*args, **kwargs)
            layer = result.layers[1]
            layer.score = None if score is None else np.array(layer.score)
            if score is not None:
                layer.score[0, 3] = score
            return result

        client.prune_layers = spoilt  # type: ignore[method-assign]
        model = tiny_llama(6)
        before = model.model.layers[0].self_attn.k_proj.weight.clone()
        with pytest.raises(ZpruneError, match=rf"model.layers.0.self_attn.k_proj: {words}") as info:
            prune_model(model, batches, client=client, sparsity=0.5, layer_rule="le-kth", progress=False)
        assert info.value.code == "invalid_response"
        assert torch.equal(model.model.layers[0].self_attn.k_proj.weight, before), "no mask of that block was applied"


def test_prune_model_le_kth_masks_are_those_of_the_returned_scores(server_url: str) -> None:
    """Block by block, le-kth zeroes every weight whose score (asked for alongside) is at most the sorted k-th."""
    model = tiny_llama(8)
    batches = [torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(8))]
    before = {n: p.clone() for n, p in model.named_parameters()}
    report = prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, dtype="f16",
                         layer_rule="le-kth", keep_responses=True, progress=False)
    for bi, result in enumerate(report.responses):
        for name in LLAMA_LINEARS:
            full = f"model.layers.{bi}.{name}"
            score = result[full].score
            k = result[full].stats["pruned"]
            limit = np.sort(score, axis=None)[k]
            weight = model.model.layers[bi].get_submodule(name).weight
            want = torch.from_numpy(np.asarray(score <= limit))
            assert torch.equal(weight == 0, want | (before[f"{full}.weight"] == 0)), full
            stats = report.stats[full]
            assert stats["pruned"] == int(want.sum()) > k and stats["threshold"] == float(limit)
            assert stats["rowSparsity"]["max"] == float(want.sum(dim=1).max()) / weight.shape[1]
            assert stats["rowSparsity"]["min"] == float(want.sum(dim=1).min()) / weight.shape[1]
    # At least k + 1 in every layer (more where f16 magnitudes tie at the limit).
    assert sum(s["pruned"] for s in report.stats.values()) == report.pruned > report.total // 2 + len(report.stats) - 1


def test_prune_model_selected_blocks_and_f16_on_the_wire(server_url: str) -> None:
    model = tiny_llama(2)
    before = {n: p.clone() for n, p in model.named_parameters()}
    batches = [torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(3))]
    report = prune_model(model, batches, server_url, method="magnitude", pattern="layer", sparsity=0.25,
                         blocks=[1], dtype="f16", progress=False)
    assert sorted(report.stats) == sorted(f"model.layers.1.{n}" for n in LLAMA_LINEARS)
    assert report.responses == [], "masks are not kept unless asked for"
    for n, p in model.named_parameters():
        if n.startswith("model.layers.1.") and n.endswith("proj.weight"):
            zeroed = (p == 0) & (before[n] != 0)
            assert int(zeroed.sum()) == int(0.25 * p.numel())
            # magnitude: the zeroed weights are the smallest (in float16, as sent)
            w16 = before[n].half().float().abs()
            assert w16[zeroed].max() <= w16[~zeroed].min()
        else:
            assert torch.equal(p, before[n]), f"{n} changed"


def test_prune_model_keeps_whole_answers_only_when_asked(server_url: str) -> None:
    model = tiny_llama(2)
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(4))]
    report = prune_model(model, batches, server_url, method="magnitude", pattern="2:4", progress=False,
                         keep_responses=True)
    assert len(report.responses) == len(model.model.layers), "one answer per block"
    for bi, result in enumerate(report.responses):
        for name in LLAMA_LINEARS:
            layer = result[f"model.layers.{bi}.{name}"]
            weight = model.model.layers[bi].get_submodule(name).weight
            assert layer.mask.shape == tuple(weight.shape)
            assert bool((weight[torch.from_numpy(layer.mask)] == 0).all()), "the kept mask is the one applied"



def _prune_through_limited_server(
    start_server: Any, env: Dict[str, str], seed: int, layer_rule: str = "exact"
) -> List[int]:
    """``prune_model`` on a tiny model at 0.5 through a server started with ``env``: checks that every layer was
    pruned once, in order, at 0.5 (under le-kth at least that), and returns how many layers each request carried."""
    server = start_server(env)
    model = tiny_llama(seed)
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(seed))]
    report = prune_model(model, batches, server.url, method="magnitude", pattern="layer", sparsity=0.5,
                         progress=False, keep_responses=True, layer_rule=layer_rule)
    blocks = len(model.model.layers)
    sent = [layer.name for result in report.responses for layer in result.layers]
    assert sent == [f"model.layers.{b}.{n}" for b in range(blocks) for n in LLAMA_LINEARS], "each layer once, in order"
    assert report.pruned == report.total // 2 if layer_rule == "exact" else report.pruned > report.total // 2
    return [len(r.layers) for r in report.responses]


def _first_unfit_layer(start_server: Any, env: Dict[str, str], layer_rule: str = "exact") -> str:
    """The message of ``prune_model``'s 413 through a server started with ``env``, where a layer cannot fit alone (it
    is raised before anything is sent for that layer: no request of the block is made)."""
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))]
    with pytest.raises(ZpruneError) as info:
        prune_model(tiny_llama(0), batches, start_server(env).url, method="magnitude", sparsity=0.5, progress=False,
                    layer_rule=layer_rule)
    assert info.value.code == "too_large", info.value
    return info.value.message


def test_prune_model_splits_a_block_over_the_body_limit(start_server: Any) -> None:
    # The tiny model's block: 122,880 bytes of f32 weights; 60,000 a request takes three or so.
    per_request = _prune_through_limited_server(start_server, {"ZPRUNE_MAX_BODY_BYTES": "60000"}, 5)
    assert len(per_request) > 3, "some block went in several requests"
    # A layer that cannot fit alone is named before anything is sent for it.
    message = _first_unfit_layer(start_server, {"ZPRUNE_MAX_BODY_BYTES": "20000"})
    assert "model.layers.0.mlp.gate_proj" in message and "to send" in message


def test_prune_model_splits_a_block_over_the_memory_budget(start_server: Any) -> None:
    # The tiny model's block in f32: q and o 4,096 weights, k and v 2,048, each MLP layer 6,144. The server reckons
    # body + the largest layer's scratch (12.125 bytes a weight for f32) + twice the masks: the attention layers about
    # 104 KB together, an MLP layer 101 KB alone, two 128 KB, the whole block 211 KB. Under 150,000 bytes a block
    # takes three requests: attention, gate and up, down.
    per_request = _prune_through_limited_server(start_server, {"ZPRUNE_MEMORY_BUDGET_BYTES": "150000"}, 6)
    assert per_request == [4, 2, 1] * 3
    message = _first_unfit_layer(start_server, {"ZPRUNE_MEMORY_BUDGET_BYTES": "90000"})
    assert "model.layers.0.mlp.gate_proj" in message and "working memory" in message
    # With the scores asked back (layer_rule="le-kth"), 8 bytes a weight more: a block that fits 250,000 bytes whole
    # takes several requests, and an MLP layer alone (about 168 KB then) no longer fits 150,000.
    whole = {"ZPRUNE_MEMORY_BUDGET_BYTES": "250000"}
    assert _prune_through_limited_server(start_server, whole, 6) == [7] * 3
    assert len(_prune_through_limited_server(start_server, whole, 6, "le-kth")) > 3
    message = _first_unfit_layer(start_server, {"ZPRUNE_MEMORY_BUDGET_BYTES": "150000"}, "le-kth")
    assert "model.layers.0.mlp.gate_proj" in message and message.endswith("no block was pruned"), message
    # The client's arithmetic is the server's: the working memory a 413 names for a whole block, to the byte.
    model = tiny_llama(6)
    specs = [Layer(f"b0.{n}", model.model.layers[0].get_submodule(n).weight.detach(), None) for n in LLAMA_LINEARS]
    client = ZpruneClient(start_server({"ZPRUNE_MEMORY_BUDGET_BYTES": "150000"}).url)
    for method in ("magnitude", "wanda", "ria", "zpruner"):  # each method's row and column vectors differ
        body = {"method": method, "sparsity": 0.5, "options": {"dataFree": True},
                "layers": [s.to_wire() for s in specs]}
        with pytest.raises(ZpruneError) as info:
            client.prune_raw(body)
        needed = re.search(r"needs about (\d+) bytes of working memory", info.value.message)
        assert info.value.code == "too_large" and needed, info.value.message
        assert int(needed.group(1)) == _working_bytes(specs, None, len(encode_request(body)), method), method
    # With the scores asked back, as layer_rule="le-kth" asks: 4 bytes a weight more, twice over.
    body = {"method": "wanda", "sparsity": 0.5, "options": {"dataFree": True}, "return": ["mask", "score"],
            "layers": [s.to_wire() for s in specs]}
    with pytest.raises(ZpruneError) as info:
        client.prune_raw(body)
    needed = re.search(r"needs about (\d+) bytes of working memory", info.value.message)
    assert needed and int(needed.group(1)) == _working_bytes(specs, None, len(encode_request(body)), "wanda", True)


def _failing_at_block_1(server_url: str, error: Exception) -> ZpruneClient:
    """A client whose second request (block 1's, for tiny_llama's blocks of one request each) raises ``error``."""
    client = ZpruneClient(server_url)
    real = client.prune_layers
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real(*args, **kwargs)

    client.prune_layers = failing  # type: ignore[method-assign]
    return client


def test_prune_model_error_names_where_it_stopped(server_url: str) -> None:
    client = _failing_at_block_1(
        server_url, ZpruneError("unavailable", "the backend failed", 503, retry_after=1.0, request_id="req-7"))
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(6))]
    with pytest.raises(ZpruneError) as info:
        prune_model(tiny_llama(6), batches, client=client, method="magnitude", sparsity=0.5, progress=False)
    e = info.value
    assert (e.code, e.status, e.retry_after, e.request_id) == ("unavailable", 503, 1.0, "req-7")
    assert e.message.startswith("block 1 (model.layers.1.self_attn.q_proj, "), e.message
    assert "blocks=range(1, 3)" in e.message and e.message.count("the backend failed") == 1


def test_resume_advice_names_the_blocks_left_as_blocks_takes_them() -> None:
    assert _resume_advice([0, 1, 2, 3, 4, 5], 0) == "no block was pruned"
    # Python to paste: a range with both ends, whether or not the run would have gone to the last block.
    assert _resume_advice([0, 1, 2, 3, 4, 5], 2) == "blocks before it are pruned, resume with blocks=range(2, 6)"
    assert _resume_advice([0, 1, 2], 1) == "blocks before it are pruned, resume with blocks=range(1, 3)"
    assert _resume_advice([2, 4, 5], 1) == "blocks before it are pruned, resume with blocks=range(4, 6)"
    # Not consecutive: the list left.
    assert _resume_advice([0, 2, 4], 1) == "blocks before it are pruned, resume with blocks=[2, 4]"
    assert _resume_advice([5, 3, 4], 1) == "blocks before it are pruned, resume with blocks=range(3, 5)"
    assert _resume_advice([5, 3, 1], 1) == "blocks before it are pruned, resume with blocks=[3, 1]"


def _zeros(weight: Any) -> int:
    """How many entries of a weight tensor are zero (a random model has none before pruning)."""
    return int((weight == 0).sum())


def test_stopped_at_keeps_the_type_and_what_it_carries() -> None:
    where, resume = "block 3, calibration pass", "resume with blocks=range(3, 6)"
    # No text (Ctrl-C): the type names it.
    again = _stopped_at(KeyboardInterrupt(), where, resume)
    assert type(again) is KeyboardInterrupt and str(again) == f"{where}: KeyboardInterrupt; {resume}"
    # An OSError keeps its errno and filename, its message not repeating them.
    gone = _stopped_at(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/w.bin"), where, resume)
    assert isinstance(gone, FileNotFoundError) and (gone.errno, gone.filename) == (errno.ENOENT, "/x/w.bin")
    assert gone.strerror == f"{where}: No such file or directory; {resume}"
    moved = _stopped_at(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), where, resume)
    assert (moved.errno, moved.filename, moved.filename2) == (errno.EXDEV, "/a", "/b")  # type: ignore[attr-defined]
    # A KeyError stays one whatever its key holds (its str() quotes and escapes the key).
    for key in ("q_proj", "a\nb", "x'y\""):
        again = _stopped_at(KeyError(key), where, resume)
        assert type(again) is KeyError and again.args == (f"{where}: {KeyError(key)}; {resume}",), key
    # A type whose constructor wants more than a message: a RuntimeError, the message the same.
    assert str(_stopped_at(_Unbuildable(7, "x"), where, resume)) == f"{where}: (7, 'x'); {resume}"


class _Unbuildable(Exception):
    """An error whose type cannot be made from one message."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)


@pytest.mark.parametrize("error, cache_inputs, kind", [
    (MemoryError("out of memory (simulated)"), False, MemoryError),
    (KeyboardInterrupt(), False, KeyboardInterrupt),  # as Ctrl-C raises it: no text
    (ValueError("bad batch (simulated)"), True, ValueError),
    (_Unbuildable(7, "simulated"), False, RuntimeError),
])
def test_prune_model_error_in_a_calibration_pass_names_the_block_and_resume(
        server_url: str, error: BaseException, cache_inputs: bool, kind: type) -> None:
    # Two batches a pass, three blocks: the caller's forward fails in block 2's pass, after blocks 0 and 1 were
    # pruned (with cache_inputs the forward runs once, to capture block 0's inputs; later passes run the blocks alone).
    model = tiny_llama(6)
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    calls = []

    def forward(m: Any, batch: Any) -> Any:
        calls.append(1)
        if len(calls) == (1 if cache_inputs else 5):
            raise error
        return m(batch)

    with pytest.raises(kind) as info:
        prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, progress=False,
                    forward=forward, cache_inputs=cache_inputs)
    message = str(info.value)
    if cache_inputs:  # capturing block 0's inputs: nothing pruned yet
        assert message.startswith("block 0, calibration pass: ") and message.endswith("; no block was pruned"), message
    else:
        assert message.startswith("block 2, calibration pass: "), message
        assert message.endswith("blocks before it are pruned, resume with blocks=range(2, 3)"), message
        layers = model.model.layers
        assert _zeros(layers[1].mlp.up_proj.weight) > 0 and _zeros(layers[2].mlp.up_proj.weight) == 0
    assert info.value.__cause__ is error


def test_prune_model_names_the_block_of_a_missing_linear_and_of_a_failed_block_output(server_url: str) -> None:
    # Checked with the layers' shapes, before any calibration pass.
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(6))]
    with pytest.raises(AttributeError) as info:
        prune_model(tiny_llama(6), batches, server_url, method="magnitude", sparsity=0.5, linears=["mlp.foo"],
                    progress=False)
    message = str(info.value)  # torch's own words in the middle
    assert message.startswith("block 0, linears ['mlp.foo']: ") and message.endswith("; no block was pruned"), message
    assert "foo" in message[len("block 0, linears ['mlp.foo']: "):], message
    # A linear the forward never calls: found in its block's calibration pass (here block 1's, after block 0's).
    model = tiny_llama(6)
    for layer in model.model.layers[1:]:
        up = layer.mlp.up_proj
        layer.mlp.unused = torch.nn.Linear(up.in_features, up.out_features, bias=False)
    with pytest.raises(RuntimeError) as info:
        prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, progress=False, blocks=[1, 2],
                    linears=["mlp.up_proj", "mlp.unused"])
    assert str(info.value) == ("block 1, model.layers.1.mlp.unused saw no input during calibration; "
                               "no block was pruned")
    # cache_inputs: block 1's outputs, feeding block 2, fail after block 1 was pruned: resume at block 2.
    model = tiny_llama(6)
    block = model.model.layers[1]
    real = block.forward
    pruned = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        if _zeros(block.mlp.up_proj.weight) > 0:  # pruned: the pass that feeds block 2
            pruned.append(1)
            raise RuntimeError("the block failed (simulated)")
        return real(*args, **kwargs)

    block.forward = forward
    with pytest.raises(RuntimeError) as info:
        prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, progress=False, cache_inputs=True)
    assert pruned and str(info.value) == ("block 1 (pruned), its outputs for block 2: the block failed (simulated); "
                                          "blocks before it are pruned, resume with blocks=range(2, 3)")


def test_prune_model_error_resumes_with_the_blocks_asked_for(server_url: str) -> None:
    # Blocks 0 and 1 of 3 asked for, block 1's request failing: resuming must not prune block 2, never asked for.
    client = _failing_at_block_1(server_url, ZpruneError("unavailable", "the backend failed", 503))
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(6))]
    with pytest.raises(ZpruneError, match=r"resume with blocks=range\(1, 2\)$"):
        prune_model(tiny_llama(6), batches, client=client, method="magnitude", sparsity=0.5, blocks=[0, 1],
                    progress=False)


@pytest.mark.parametrize("settings,words", [
    (dict(method="magnitude"), "sparsity: required for pattern 'layer'"),
    (dict(method="magnitude", pattern="row"), "sparsity: required for pattern 'row'"),
    (dict(method="Wanda", sparsity=0.5), "method: 'Wanda' is none of zpruner, wanda, ria, magnitude"),
    (dict(pattern="4:2"), "pattern: '4:2' is not"),
    (dict(pattern="2:0"), "pattern: '2:0' is not"),
    (dict(pattern="1:10000"), "pattern: '1:10000' is not \"layer\", \"row\" or \"N:M\" with 0 < N < M <= 9999"),
    (dict(pattern="2 :4"), "pattern: '2 :4' is not"),
    (dict(pattern="\u0662:\u0664"), "pattern: '\u0662:\u0664' is not"),  # Arabic-Indic digits: the server's are ASCII
    (dict(sparsity=[0.5]), "sparsity: [0.5] is not"),
    (dict(sparsity=np.bool_(False)), "sparsity: False is not"),
    (dict(sparsity=1.0), "sparsity: 1.0 is not a number with 0 <= sparsity < 1"),
    (dict(sparsity=-0.1), "sparsity: -0.1 is not"),
    (dict(sparsity=math.nan), "sparsity: nan is not"),
    (dict(sparsity=True), "sparsity: True is not"),
    (dict(sparsity="0.5"), "sparsity: '0.5' is not"),
    (dict(sparsity=0.5, exponent=-1), "exponent: -1 is not a number from 0 to 64"),
    (dict(sparsity=0.5, exponent=64.5), "exponent: 64.5 is not"),
    (dict(sparsity=0.5, exponent=math.inf), "exponent: inf is not"),
])
def test_prune_model_refuses_settings_the_server_would_before_any_calibration(
    server_url: str, settings: Dict[str, Any], words: str
) -> None:
    model = tiny_llama(5)
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(5))]
    passes: List[int] = []

    def forward(m: Any, batch: Any) -> Any:
        passes.append(1)
        return m(batch)

    with pytest.raises(ZpruneError) as info:
        prune_model(model, batches, server_url, forward=forward, progress=False, **settings)
    e = info.value
    assert (e.code, e.status) == ("invalid_request", 422), e.message
    assert e.message.startswith(words) and e.message.endswith("; no block was pruned"), e.message
    assert passes == [] and all(not (p == 0).any() for p in model.parameters())


def test_prune_model_takes_the_settings_the_server_does(server_url: str) -> None:
    # The bounds themselves, numpy numbers, and N:M with no sparsity (API.md: ignored there): pruned, as the server
    # accepts them all. One block each, to keep it short.
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(5))]
    # prune_layers sends float(sparsity): a 0-d tensor or array, or a Fraction, goes as the number it holds.
    for settings in [dict(method="wanda", sparsity=0.0, exponent=0), dict(method="ria", sparsity=np.float32(0.5),
                     exponent=np.int64(64)), dict(pattern="2:4"), dict(pattern="2:4", sparsity=7),
                     dict(sparsity=torch.tensor(0.5), exponent=np.array(1.5)), dict(sparsity=Fraction(1, 2))]:
        report = prune_model(tiny_llama(5), batches, server_url, blocks=[2], progress=False, **settings)
        assert report.total > 0 and report.pruned == (0 if settings.get("sparsity") == 0.0 else report.total // 2)


@pytest.mark.parametrize("blocks,words", [
    ([3], "blocks: 3 is not a block of this model's 3 (0 to 2)"),
    ([-1], "blocks: -1 is not a block of this model's 3"),
    ([1, 1], "blocks: 1 is given twice"),
    ([1.0], "blocks: 1.0 is not a block index"),
    ([True], "blocks: True is not a block index"),
])
def test_prune_model_refuses_blocks_that_are_not_distinct_block_indices(
    server_url: str, blocks: List[Any], words: str
) -> None:
    model = tiny_llama(5)
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(5))]
    with pytest.raises(ValueError, match=f"^{re.escape(words)}"):
        prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, blocks=blocks, progress=False)
    assert all(not (p == 0).any() for p in model.parameters())


def test_prune_model_client_side_errors_name_the_block_and_where_to_resume(server_url: str) -> None:
    # A tensor the client cannot encode mid-run (here made so at block 1's request): the blocks before it are pruned.
    client = _failing_at_block_1(
        server_url, ValueError("layer 'model.layers.1.mlp.up_proj', act_norm_sq: a value overflows float32"))
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(6))]
    with pytest.raises(ValueError, match=r"^block 1, layer 'model.layers.1.mlp.up_proj', act_norm_sq: a value "
                       r"overflows float32; blocks before it are pruned, resume with blocks=range\(1, 3\)$"):
        prune_model(tiny_llama(6), batches, client=client, method="magnitude", sparsity=0.5, progress=False)


def test_prune_model_refuses_weights_past_the_wire_dtype_before_pruning_any_block(server_url: str) -> None:
    model = tiny_llama(9)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = 1e6  # past float16's 65504
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(9))]
    with pytest.raises(ValueError, match=r"^block 1, model.layers.1.mlp.up_proj, weight: 1 finite value is beyond the "
                       r"range of f16 \(the first, 1000000.0, at index \[3, 5\]\).*; no block was pruned$"):
        prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, dtype="f16", progress=False)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} changed"
    # The same model goes in float32 (its own dtype): nothing to overflow there.
    report = prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, progress=False)
    assert report.pruned == report.total // 2


def test_prune_model_refuses_windows_without_a_batch_dimension(server_url: str) -> None:
    windows = torch.randint(0, 97, (6, 32), generator=torch.Generator().manual_seed(4))
    model = tiny_llama(4)
    # The windows tensor itself iterates as 1-D rows, which the model would fail on deep in its forward pass.
    with pytest.raises(ValueError, match=r"calibration_batches is one tensor of shape \[6, 32\], not batches of it"):
        prune_model(model, windows, server_url, method="magnitude", sparsity=0.5, progress=False)
    with pytest.raises(ValueError, match=r"calibration batch 1 has shape \[32\], no batch dimension"):
        prune_model(model, [windows[:2], windows[2]], server_url, method="magnitude", sparsity=0.5, progress=False)
    with pytest.raises(ValueError, match=r"calibration batch 0 has shape \[32\]"):
        prune_model(model, [{"input_ids": windows[0]}], server_url, method="magnitude", sparsity=0.5, progress=False)
    assert all(not (p == 0).any() for p in model.parameters()), "nothing was pruned"
    # A stack of batches [k, batch, seq] iterates as batches, and is pruned.
    report = prune_model(model, windows.reshape(3, 2, 32), server_url, method="magnitude", sparsity=0.5,
                         progress=False)
    assert report.pruned == report.total // 2


def test_prune_model_names_a_nan_weight_before_pruning_any_block(server_url: str) -> None:
    # A NaN weight in block 1's q_proj makes the attention's output NaN. The server checks a request's activations
    # before its weights, so it would name o_proj's activations; the client finds the weight itself, up front.
    model = tiny_llama(7)
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight[1, 2] = float("nan")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(7))]
    with pytest.raises(ZpruneError) as info:
        prune_model(model, batches, server_url, method="wanda", sparsity=0.5, progress=False)
    e = info.value
    cols = model.model.layers[1].self_attn.q_proj.weight.shape[1]
    assert (e.code, e.status) == ("non_finite", 422), e.message
    assert e.message == (f"block 1, model.layers.1.self_attn.q_proj: weight[{cols + 2}] (row 1, column 2) is NaN or "
                         "infinite; no block was pruned"), e.message
    for n, p in model.named_parameters():  # the NaN compared as a number: every weight as it was
        assert torch.equal(torch.nan_to_num(p), torch.nan_to_num(before[n])), f"{n} changed"


def test_prune_model_error_names_the_layer_a_message_is_about(server_url: str) -> None:
    # A NaN in block 1's post-attention norm (not a pruned layer) makes the MLP's inputs NaN: gate_proj's activations
    # are the first non-finite values the server meets, and its message names them by field path ("layers[4]...").
    model = tiny_llama(7)
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight[2] = float("nan")
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(7))]
    with pytest.raises(ZpruneError) as info:
        prune_model(model, batches, server_url, method="wanda", sparsity=0.5, progress=False)
    e = info.value
    assert (e.code, e.status) == ("non_finite", 422), e.message
    assert e.message.startswith("block 1, model.layers.1.mlp.gate_proj: layers[4].actNormSq[2]"), e.message
    # The id the server logged the request under, as prune_layers raises it: what to quote to its operator.
    assert e.request_id is not None and e.request_id == getattr(e.__cause__, "request_id", None)


class _Toy(torch.nn.Module):
    """Decoder blocks ``model.layers[i]`` of ``up`` then ``down`` linears, of the given (hidden, inner) sizes."""

    def __init__(self, sizes: List[Any]) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList()
        for hidden, inner in sizes:
            block = torch.nn.Module()
            block.up = torch.nn.Linear(hidden, inner, bias=False)  # weight [inner, hidden]
            block.down = torch.nn.Linear(inner, 8, bias=False)  # weight [8, inner]
            self.model.layers.append(block)

    def forward(self, x: Any) -> Any:
        for block in self.model.layers:
            x = block.down(torch.relu(block.up(x)))
        return x


@pytest.mark.parametrize("inner,pattern,env,code,words", [
    # Block 1's down has 30 columns: no multiple of M = 4.
    (30, "2:4", None, "shape_mismatch", "block 1, model.layers.1.down: its 30 columns are not a multiple of M = 4"),
    # Block 1's up has 200 x 8 weights, over the server's largest layer of 1,000.
    (200, "layer", {"ZPRUNE_MAX_LAYER_ELEMENTS": "1000"}, "too_large", "block 1, model.layers.1.up: 200 x 8 weights"),
    # 100 x 8 f32 weights are 3,200 bytes, over a body limit of 3,000 that each layer of block 0 fits in.
    (100, "layer", {"ZPRUNE_MAX_BODY_BYTES": "3000"}, "too_large", "block 1, model.layers.1.up: about"),
    # Block 1's up alone needs more working memory than the budget; block 0's layers fit it.
    (100, "layer", {"ZPRUNE_MEMORY_BUDGET_BYTES": "12000"}, "too_large", "block 1, model.layers.1.up: about"),
])
def test_prune_model_refuses_a_model_the_server_would_before_pruning_any_block(
    server_url: str, start_server: Any, inner: int, pattern: str, env: Any, code: str, words: str
) -> None:
    model = _Toy([(8, 16), (8, inner)])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = [torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(8))]
    url = start_server(env).url if env else server_url
    with pytest.raises(ZpruneError) as info:
        prune_model(model, batches, url, method="magnitude", pattern=pattern, sparsity=0.5, linears=("up", "down"),
                    progress=False)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} changed: {info.value.message}"
    assert info.value.code == code and info.value.message.startswith(words), info.value.message
    assert "no block was pruned" in info.value.message


def test_prune_model_takes_one_linear_named_as_a_str(server_url: str) -> None:
    # linears="up" is that one layer (a str is also a sequence of its letters, which no block has).
    model = _Toy([(8, 16), (8, 16)])
    down = [b.down.weight.detach().clone() for b in model.model.layers]
    batches = [torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3))]
    report = prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, linears="up", progress=False)
    assert sorted(report.stats) == ["model.layers.0.up", "model.layers.1.up"], list(report.stats)
    for block, before in zip(model.model.layers, down):
        assert torch.equal(block.down.weight, before)
        assert int((block.up.weight == 0).sum()) == 64  # half of 16 x 8


def test_prune_model_sends_the_mean_over_sequences_of_every_batch_s_squared_inputs(server_url: str) -> None:
    # API.md's actNormSq: per input feature, the sum over calibration tokens of x_j^2 divided by the number of
    # calibration sequences; here two batches of 3 and 2 sequences (5) of 4 tokens.
    model = _Toy([(8, 16), (8, 16)])
    batches = [torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(11)),
               torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(12))]
    # Block 0's inputs are the batches themselves: the expectation needs no model.
    expected = sum((b.double() ** 2).sum(dim=(0, 1)) for b in batches) / 5
    client = ZpruneClient(server_url)
    real, sent = client.prune_layers, {}

    def recording(layers: Any, **kwargs: Any) -> Any:
        for layer in layers:
            sent[layer.name] = np.asarray(layer.act_norm_sq, dtype=np.float64)
        return real(layers, **kwargs)

    client.prune_layers = recording  # type: ignore[method-assign]
    prune_model(model, batches, client=client, method="wanda", sparsity=0.5, linears=("up",), progress=False)
    np.testing.assert_allclose(sent["model.layers.0.up"], expected.numpy(), rtol=1e-5)


def test_prune_model_refuses_cache_inputs_for_blocks_out_of_order_and_keeps_training_mode(server_url: str) -> None:
    model = tiny_llama(4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = [torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(5))]
    for blocks in ([0, 2], [1, 0]):
        with pytest.raises(ValueError, match="cache_inputs needs consecutive blocks in ascending order"):
            prune_model(model, batches, server_url, method="wanda", sparsity=0.5, blocks=blocks, cache_inputs=True,
                        progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "no weight changed"
    # Pruned in eval mode (no dropout in the calibration passes), handed back in the mode it came in.
    model.train()
    prune_model(model, batches, server_url, method="magnitude", sparsity=0.5, blocks=[0], progress=False)
    assert model.training


class _KvBlock(torch.nn.Module):
    """A block called as transformers calls a decoder layer, with a KV cache; it records what it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(8, 8, bias=False)
        self.calls: List[Any] = []

    def forward(self, x: Any, past_key_value: Any = None, use_cache: bool = False) -> Any:
        self.calls.append((past_key_value, use_cache))
        return (self.up(x),)


def test_prune_model_cache_inputs_replays_blocks_without_their_kv_cache(server_url: str) -> None:
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.layers = torch.nn.ModuleList([_KvBlock(), _KvBlock()])

    def forward(m: Any, x: Any) -> Any:
        for block in m.model.layers:
            x = block(x, past_key_value=["a cache"], use_cache=True)[0]
        return x

    batches = [torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(9))]
    prune_model(model, batches, server_url, method="wanda", sparsity=0.5, linears=("up",), forward=forward,
                cache_inputs=True, progress=False)
    replayed = [call for block in model.model.layers for call in block.calls]
    assert replayed and all(call == (None, False) for call in replayed), replayed


def test_batches_keep_each_request_within_the_budget_whatever_the_order() -> None:
    from zprune_client.model import _REQUEST_OVERHEAD, _batches, _check_layer_shape, _wire_bytes

    big = Layer("big", torch.randn(64, 64), torch.rand(64))
    small = Layer("small", torch.randn(8, 8), torch.rand(8))
    # Room for the big layer's working memory and the small one's bytes, not for both layers' masks beside them.
    alone = _working_bytes([big], None, _REQUEST_OVERHEAD + _wire_bytes(big, None), "wanda")
    budget = alone + _wire_bytes(small, None)
    for order in ([big, small], [small, big]):
        groups = _batches(order, None, 10**9, budget, "wanda")
        assert [[s.name for s in g] for g in groups] == [[s.name] for s in order]
    together = _batches([big, small], None, 10**9, budget + 64, "wanda")
    assert [[s.name for s in g] for g in together] == [["big", "small"]]
    # The server's largest layer, inclusive.
    _check_layer_shape("l", np.zeros((10, 10)), "layer", 100)
    with pytest.raises(ZpruneError, match="10 x 10 weights, over the server's largest layer of 99"):
        _check_layer_shape("l", np.zeros((10, 10)), "layer", 99)


def test_read_tokens_takes_uint32_for_a_u32_name_and_uint16_otherwise(tmp_path: Any) -> None:
    ids = [0, 1, 65535, 65536, 128255, 2**31 - 1, 300]
    raw = struct.pack("<7I", *ids)
    for name in ("ids.u32", "IDS.U32"):
        (tmp_path / name).write_bytes(raw)
        assert read_tokens(tmp_path / name).tolist() == ids
        assert read_tokens(str(tmp_path / name)).tolist() == ids
    # Any other name reads the same bytes as uint16, as the CLI does: each id's low half, then its high half.
    (tmp_path / "ids.u16").write_bytes(raw)
    assert read_tokens(tmp_path / "ids.u16").tolist() == [h for i in ids for h in (i & 0xFFFF, i >> 16)]
    # A dtype given wins over the name.
    assert read_tokens(tmp_path / "ids.u16", dtype="<u4").tolist() == ids
    assert read_tokens(tmp_path / "ids.u32").dtype == np.int64
    # A ragged tail is refused, as the CLI refuses it, not dropped.
    (tmp_path / "ragged.u32").write_bytes(raw[:6])
    with pytest.raises(ValueError, match="ragged.u32: byte length is not a multiple of 4 for uint32 ids"):
        read_tokens(tmp_path / "ragged.u32")
    (tmp_path / "odd.u16").write_bytes(raw[:3])
    with pytest.raises(ValueError, match="odd.u16: byte length is not a multiple of 2 for uint16 ids"):
        read_tokens(tmp_path / "odd.u16")


def test_windows_outside_the_ids_or_predicting_nothing_are_refused_by_name() -> None:
    ids = np.arange(100)
    assert calibration_windows(ids, [95], 5).tolist() == [[95, 96, 97, 98, 99]]  # the last whole window
    # numpy would cut these short, or count a negative start from the end: the CLI's --calib-starts check refuses both.
    with pytest.raises(ValueError, match=r"^window 1 \(of 2\): its start 96 \+ 5 tokens runs past the 100 tokens"):
        calibration_windows(ids, [0, 96], 5)
    with pytest.raises(ValueError, match=r"^window 0 \(of 1\): its start -5 is negative$"):
        calibration_windows(ids, [-5], 5)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="seq_len must be an integer of at least 1"):
            calibration_windows(ids, [0], bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one window start"):
        calibration_windows(ids, [], 5)
    # A window must predict a token: perplexity would divide by zero predictions.
    with pytest.raises(ValueError, match="^the ids hold 4 tokens: not one window of 5$"):
        eval_windows(np.arange(4), 5)
    with pytest.raises(ValueError, match="seq_len must be an integer of at least 2"):
        eval_windows(ids, 1)
    with pytest.raises(ValueError, match="limit must be an integer of at least 1"):
        eval_windows(ids, 5, limit=0)
    for shape in ((0, 5), (3, 1), (5,)):
        with pytest.raises(ValueError, match=r"perplexity needs windows \[n >= 1, t >= 2\]"):
            perplexity(torch.nn.Identity(), torch.zeros(shape, dtype=torch.int64))


def test_windows_are_the_exact_slices_and_perplexity_counts_every_batch_in_eval_mode() -> None:
    ids = np.arange(100)
    assert calibration_windows(ids, [0, 10], 5).tolist() == [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]]
    assert eval_windows(np.arange(10), 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert eval_windows(np.arange(10), 3, limit=2).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert calibration_windows(ids, [0], 5).dtype == torch.int64

    class Spy(torch.nn.Module):
        """Logits that favour token (t + 1) % 7 after token t, recording the mode each call ran in."""

        def __init__(self) -> None:
            super().__init__()
            self.modes: List[bool] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.modes.append(self.training)
            return 3.0 * torch.nn.functional.one_hot((x + 1) % 7, 7).float()

    windows = torch.tensor([[i % 7, (i + 1) % 7, (i + 3) % 7] for i in range(9)])
    # The slow oracle: cross-entropy of each predicted position, one at a time, over all 9 windows.
    losses = []
    for w in windows.tolist():
        for t in range(2):
            logits = torch.full((7,), 0.0)
            logits[(w[t] + 1) % 7] = 3.0
            losses.append(float(-torch.log_softmax(logits, 0)[w[t + 1]]))
    want = math.exp(sum(losses) / len(losses))
    spy = Spy()
    spy.train()
    for batch_size in (1, 4, 8, 100):
        assert perplexity(spy, windows, batch_size=batch_size) == pytest.approx(want, rel=1e-6), batch_size
    assert spy.training, "the training mode is restored"
    assert spy.modes and not any(spy.modes), "every forward ran in eval mode"
    assert len(spy.modes) == 9 + 3 + 2 + 1
