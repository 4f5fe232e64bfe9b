"""Sequential pruning of a PyTorch LLaMA-family model through a zprune server.

The model must be laid out as Hugging Face transformers lays out ``LlamaForCausalLM``: ``model.model.layers[i]``
with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (``torch.nn.Linear`` or anything with a
``weight`` of shape ``[out, in]`` whose forward takes the input as its first argument).

For each decoder block in order: one forward pass of every calibration batch through the model *as pruned so far*
collects, for each of the block's linear layers, ``actNormSq`` = the sum over calibration tokens of x_j² divided by
the number of calibration sequences; one request prunes all of them; the masks are applied in place (pruned
weights set to zero); then the next block. This is the procedure of SparseGPT, Wanda and the Z-Pruner paper.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence, Tuple

import numpy as np

from .client import Layer, LayerResult, PruneResult, ZpruneClient, ZpruneError
from .llama_config import LINEAR_NAMES
from .wire import WireDType, apply_mask, to_numpy

if TYPE_CHECKING:
    from numpy.typing import NDArray

#: The linear layers of one transformers LLaMA decoder block, in the order they are sent.
LLAMA_LINEARS = LINEAR_NAMES

#: How ``prune_model`` applies the ``layer`` pattern's masks, the default first (see ``mask_at_most_kth``).
LAYER_RULES = ("exact", "le-kth")

__all__ = ["LAYER_RULES", "LLAMA_LINEARS", "ModelPruneReport", "mask_at_most_kth", "prune_model"]


@dataclass
class ModelPruneReport:
    """What ``prune_model`` did.

    Attributes:
        stats: per full layer name (``model.layers.0.self_attn.q_proj``), the server's statistics.
        pruned, total: weights pruned and weights considered, over all pruned layers.
        responses: every ``PruneResult``, one per request (a block takes one unless it exceeds the body limit),
            when ``prune_model`` was asked to keep them (``keep_responses=True``); empty otherwise, since their masks
            take a byte per weight (about 6.5 GB for a 7B model) and are already applied to the model.
    """

    stats: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    pruned: int = 0
    total: int = 0
    responses: List[PruneResult] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Pruned fraction over all pruned layers."""
        return self.pruned / self.total if self.total else 0.0


class _StopForward(Exception):
    """Raised by a hook after the block being calibrated, so the rest of the model is not run."""


def _default_forward(model: Any, batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _count_sequences(batch: Any) -> int:
    if isinstance(batch, Mapping):
        batch = batch.get("input_ids", next(iter(batch.values())))
    elif isinstance(batch, (tuple, list)):
        batch = batch[0]
    shape = getattr(batch, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) > 1 else 1


def _check_batches(calibration_batches: Any, batches: List[Any]) -> None:
    """Raises ``ValueError`` for a tensor of windows passed as the batches, or a batch (or a dict's ``input_ids``)
    without a batch dimension: the model would fail deep in its forward pass, naming neither the batch nor the cause."""
    hint = "pass a list of batches: [windows] or batches(windows, size)"
    whole = getattr(calibration_batches, "shape", None)
    if whole is not None and len(whole) <= 2:  # iterating it gives 1-D rows (a 3-D stack gives batches: fine)
        raise ValueError(f"calibration_batches is one tensor of shape {list(whole)}, not batches of it; {hint}")
    for i, batch in enumerate(batches):
        shape = getattr(batch.get("input_ids") if isinstance(batch, Mapping) else batch, "shape", None)
        if shape is not None and len(shape) < 2:
            raise ValueError(f"calibration batch {i} has shape {list(shape)}, no batch dimension; {hint}")


def _run_until_stopped(model: Any, batches: List[Any], run: Callable[[Any, Any], Any]) -> None:
    """Runs every batch through the model; a hook's ``_StopForward`` ends that batch's pass early."""
    for batch in batches:
        try:
            run(model, batch)
        except _StopForward:
            pass


def _capture_inputs(model: Any, block: Any, batches: List[Any], run: Callable[[Any, Any], Any]) -> List[Any]:
    """Runs every batch up to ``block`` and returns the (args, kwargs) it was called with, per batch."""
    captured: List[Tuple[Tuple[Any, ...], Dict[str, Any]]] = []
    had_own = "forward" in block.__dict__
    own = block.__dict__.get("forward")

    def catcher(*args: Any, **kwargs: Any) -> Any:
        for key in ("past_key_value", "past_key_values"):
            if key in kwargs:
                kwargs[key] = None
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        captured.append((args, kwargs))
        raise _StopForward()

    block.forward = catcher
    try:
        import torch

        with torch.no_grad():
            _run_until_stopped(model, batches, run)
    finally:
        if had_own:
            block.forward = own
        else:
            del block.forward
    if len(captured) != len(batches):
        raise RuntimeError("the first block to prune was not called once per calibration batch")
    return captured


def _next_inputs(out: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    hidden = out[0] if isinstance(out, (tuple, list)) else out
    if args:
        return (hidden, *args[1:]), kwargs
    return (), {**kwargs, "hidden_states": hidden}


#: Bytes of msgpack around a layer's tensors, and around a request's layers: generous.
_LAYER_OVERHEAD = _REQUEST_OVERHEAD = 256


def _element_bytes(spec: Layer, dtype: Optional[WireDType]) -> int:
    """Bytes a weight takes on the wire: its ``dtype``'s, else 2 for a 16-bit tensor and 4 for any other (a float64
    weight is sent as f32)."""
    if dtype:
        return {"f32": 4, "f16": 2, "bf16": 2}[dtype]
    return 2 if int(getattr(spec.weight, "element_size", lambda: 4)()) == 2 else 4


def _wire_bytes(spec: Layer, dtype: Optional[WireDType]) -> int:
    """About how many bytes ``spec`` takes in a request body (an over-estimate)."""
    act = 4 * int(spec.act_norm_sq.numel()) if spec.act_norm_sq is not None else 0
    return int(spec.weight.numel()) * _element_bytes(spec, dtype) + act + 3 * len(spec.name) + _LAYER_OVERHEAD


#: The CPU backend's most row blocks and fewest elements a block, and most selection parts (contract/working_memory.ts).
_MAX_BLOCKS, _BLOCK_MIN_ELEMENTS, _MAX_WORK_PARTS = 32, 1 << 17, 64


def _layer_vector_bytes(rows: int, cols: int, method: str) -> int:
    """The server's count of a layer's per-row and per-column float64 vectors at its peak (``layerVectorBytes`` in
    ``contract/working_memory.ts``: the row blocks' partial sums, merged sums, inverses, activations, row scratch)."""
    blocks = max(1, min(_MAX_BLOCKS, rows, (rows * cols) // _BLOCK_MIN_ELEMENTS))
    per_row = 4 * 24 + 16 if method == "zpruner" else 4 * 8 + 16 if method == "ria" else 0
    if method == "magnitude":
        per_col = 8
    else:
        per_col = 32 + (48 * blocks + 32 if method == "zpruner" else 24 * blocks + 16 if method == "ria" else 0)
    return rows * per_row + cols * (per_col + 4 * min(rows, _MAX_WORK_PARTS))


def _working_bytes(
    specs: Sequence[Layer], dtype: Optional[WireDType], body: int, method: str = "zpruner", score: bool = False,
) -> int:
    """The server's estimate of the working memory a request of ``specs`` (masks back, and the scores where
    ``score``, pruned by ``method``) in a body of ``body`` bytes needs, which it holds against ``memoryBudgetBytes``:
    the body, the largest layer's scratch (f32 weights and scores, a copy of its bytes, the mask, its row and column
    vectors) and twice what comes back. The same arithmetic as the server's ``contract/working_memory.ts``."""
    scratch = 0.0
    kept = 0.0
    for spec in specs:
        n = int(spec.weight.numel())
        rows, cols = int(spec.weight.shape[0]), int(spec.weight.shape[1])
        vectors = _layer_vector_bytes(rows, cols, method)
        scratch = max(scratch, n * (8 + _element_bytes(spec, dtype)) + n / 8 + vectors)
        kept += n / 8 + (4 * n if score else 0)
    return math.ceil(body + scratch + 2 * kept)


def _batches(
    specs: List[Layer],
    dtype: Optional[WireDType],
    max_body: int,
    budget: Optional[int] = None,
    method: str = "zpruner",
    score: bool = False,
) -> List[List[Layer]]:
    """``specs`` in order, in as few consecutive groups as keep each request body within ``max_body`` bytes and its
    working memory on the server (pruned by ``method``, the scores returned where ``score``) within ``budget``
    (``memoryBudgetBytes``; None: no budget)."""
    groups: List[List[Layer]] = []
    current: List[Layer] = []
    used = _REQUEST_OVERHEAD
    for spec in specs:
        size = _wire_bytes(spec, dtype)
        if _REQUEST_OVERHEAD + size > max_body:
            raise ZpruneError("too_large", f"{spec.name}: about {_REQUEST_OVERHEAD + size} bytes to send, over the "
                              f"server's limit of {max_body}", 413)
        alone = _working_bytes([spec], dtype, _REQUEST_OVERHEAD + size, method, score)
        if budget is not None and alone > budget:
            raise ZpruneError("too_large", f"{spec.name}: about {alone} bytes of working memory on the server, over "
                              f"its budget of {budget}", 413)
        grown = _working_bytes([*current, spec], dtype, used + size, method, score)
        over_budget = budget is not None and grown > budget
        if current and (used + size > max_body or over_budget):
            groups.append(current)
            current, used = [], _REQUEST_OVERHEAD
        current.append(spec)
        used += size
    if current:
        groups.append(current)
    return groups


# The server's N:M grammar: [0-9], not \d, which in Python takes any script's digits.
_NM_PATTERN = re.compile(r"([0-9]{1,4}):([0-9]{1,4})")


def _nm_group(pattern: str) -> int:
    """M of an ``"N:M"`` pattern (each row's groups of M columns), 0 for ``"layer"`` and ``"row"``."""
    nm = _NM_PATTERN.fullmatch(pattern)
    return int(nm.group(2)) if nm else 0


def _check_layer_shape(name: str, weight: Any, pattern: str, max_elements: Optional[int]) -> None:
    """Raises the ``ZpruneError`` the server would answer for a weight of this shape: columns not a multiple of
    ``pattern``'s M (``shape_mismatch``), more than ``max_elements`` weights (``too_large``)."""
    rows, cols = (int(d) for d in weight.shape)
    m = _nm_group(pattern)
    if m and cols % m:
        raise ZpruneError("shape_mismatch", f"{name}: its {cols} columns are not a multiple of M = {m} (pattern "
                          f"{pattern})", 422)
    if max_elements is not None and rows * cols > max_elements:
        raise ZpruneError("too_large", f"{name}: {rows} x {cols} weights, over the server's largest layer of "
                          f"{max_elements}", 413)


def _check_model_fits(
    decoder: Any, order: Sequence[int], linears: Sequence[str], pattern: str, dtype: Optional[WireDType],
    limits: Mapping[str, Any], method: str = "zpruner", score: bool = False,
) -> None:
    """Raises, before any block is pruned, for a layer of ``order``'s blocks that the server (``limits`` from
    ``/v1/info``) would refuse whatever its activations: the error it would answer, naming the block and layer. As
    the Deno CLI's ``checkModelFits``: a refusal found at block 5 would leave blocks 0-4 pruned, and resuming cannot
    mend a layer's shape."""
    import torch

    max_elements = int(limits["maxLayerElements"]) if limits.get("maxLayerElements") is not None else None
    budget = int(limits["memoryBudgetBytes"]) if limits.get("memoryBudgetBytes") is not None else None
    for bi in order:
        specs = []
        try:
            for name in linears:
                try:
                    weight = decoder[bi].get_submodule(name).weight.detach()
                except AttributeError as e:  # a linear the block has not (or one without a weight): `linears` is wrong
                    raise AttributeError(f"block {bi}, linears {list(linears)}: {e}; no block was pruned") from e
                full = f"model.layers.{bi}.{name}"
                _check_layer_shape(full, weight, pattern, max_elements)
                _check_layer_values(full, weight, dtype)
                # Only the activations' size counts here: they are collected later, block by block.
                specs.append(Layer(full, weight, torch.empty(int(weight.shape[1])), None, dtype))
            _batches(specs, dtype, int(limits["maxBodyBytes"]), budget, method, score)
        except ZpruneError as e:
            raise ZpruneError(e.code, f"block {bi}, {e.message}; no block was pruned", e.status) from None
        except ValueError as e:
            raise ValueError(f"block {bi}, {e}; no block was pruned") from None


def _check_layer_values(name: str, weight: Any, dtype: Optional[WireDType]) -> None:
    """Raises what sending ``weight`` as ``dtype`` would: ``ZpruneError("non_finite")`` naming its first NaN or
    infinity, as the server would, but before any block is pruned (the server sees it only once its block is sent);
    ``ValueError`` for a value past the wire dtype's range. One pass for both: the extremes are NaN or infinite when
    any value is, and overflow grows with magnitude."""
    import torch

    if weight.numel() == 0:
        return  # the server's to refuse
    lo, hi = weight.min(), weight.max()  # in the weight's own dtype: no copy of it
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        bad = torch.nonzero(~torch.isfinite(weight.reshape(-1)))[0].item()
        row, col = divmod(int(bad), int(weight.shape[1]))
        raise ZpruneError("non_finite", f"{name}: weight[{bad}] (row {row}, column {col}) is NaN or infinite", 422)
    own = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32"}.get(weight.dtype)
    if own is not None and dtype in (None, own):
        return  # sent as it is: nothing to overflow
    try:
        to_numpy(torch.stack([lo, hi]), dtype)
    except ValueError:
        try:
            to_numpy(weight, dtype)  # again on the whole weight, only now: its message counts and places the values
        except ValueError as e:
            raise ValueError(f"{name}, weight: {e}") from None


def _progress(iterable: Iterable[int], total: int, enabled: bool) -> Iterable[int]:
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    bar: Iterable[int] = tqdm(iterable, total=total, desc="zprune blocks", unit="block")
    return bar


def _input_sums(
    model: Any,
    block: Any,
    mods: Sequence[Tuple[str, Any]],
    batches: List[Any],
    run: Callable[[Any, Any], Any],
    cached: Optional[List[Tuple[Tuple[Any, ...], Dict[str, Any]]]],
    stop_early: bool,
) -> Dict[str, Any]:
    """Each linear's sum of squared inputs per column over the calibration tokens, from one pass that reaches ``block``.

    With ``cached`` block inputs, only the block runs; else the whole model, stopped after the block if ``stop_early``.
    """
    import torch

    sums: Dict[str, Any] = {}
    handles = []

    def make_hook(key: str) -> Callable[..., None]:
        def hook(_mod: Any, args: Any, _out: Any) -> None:
            x = args[0].detach()
            sq = x.reshape(-1, x.shape[-1]).to(torch.float32).pow(2).sum(dim=0)
            sums[key] = sq if key not in sums else sums[key] + sq

        return hook

    def stop(_mod: Any, _args: Any, _out: Any) -> None:
        raise _StopForward()

    try:
        for name, mod in mods:
            handles.append(mod.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            if cached is not None:
                for args, kwargs in cached:
                    block(*args, **kwargs)
            else:
                if stop_early:
                    handles.append(block.register_forward_hook(stop))
                _run_until_stopped(model, batches, run)
    finally:
        for h in handles:
            h.remove()
    return sums


def mask_at_most_kth(score: Any, k: int) -> Tuple[NDArray[np.bool_], float]:
    """Every weight whose score is at most the (k+1)-th lowest, as the Wanda code base's layer-wide threshold prunes
    (``W_metric <= torch.sort(W_metric.flatten())[0][k]``) and ``reference.json``'s masks were made: k + 1 weights,
    more where scores tie there (at least one even at k = 0); every weight when ``k >= n``. Raises ``ValueError`` for a
    negative k or a score that is negative or not finite (as the TypeScript ``maskAtMostKth`` does).

    Returns:
        The bool mask (True = pruned) of ``score``'s shape, and that score: the largest pruned (+0.0 for a zero).
    """
    values = np.asarray(score, dtype=np.float32)
    flat = values.ravel()
    if k < 0:
        raise ValueError(f"k = {k} weights to prune")
    bad = np.flatnonzero(~((flat >= 0) & np.isfinite(flat)))
    if bad.size:
        raise ValueError(f"score[{bad[0]}] is {flat[bad[0]]}, not a finite score >= 0")
    if flat.size == 0:
        return np.zeros(values.shape, dtype=bool), -math.inf
    threshold = float(np.partition(flat, k)[k] if k < flat.size else flat.max()) + 0.0
    return values <= threshold, threshold


def _at_most_kth_layer(layer: LayerResult) -> LayerResult:
    """``layer`` under layer rule ``le-kth``: the mask of ``mask_at_most_kth`` at the server's k (its pruned count)
    with its stats, from the scores it came with, which are dropped."""
    rows, cols = layer.shape
    score = layer.score
    if score is None or score.shape != (rows, cols):
        raise ZpruneError("invalid_response", f"{layer.name}: no f32 score of each weight, which le-kth needs", 200)
    try:
        mask, threshold = mask_at_most_kth(score, int(layer.stats["pruned"]))
    except ValueError as e:
        raise ZpruneError("invalid_response", f"{layer.name}: {e}", 200) from None
    per_row = mask.sum(axis=1)
    pruned, total = int(per_row.sum()), rows * cols
    stats = dict(layer.stats)
    stats.update(pruned=pruned, total=total, sparsity=pruned / total if total else 0.0, nonFinite=0)
    stats["rowSparsity"] = {
        "min": int(per_row.min()) / cols if rows else 0.0,
        "max": int(per_row.max()) / cols if rows else 0.0,
        "mean": pruned / total if total else 0.0,
    }
    if total:
        stats["threshold"] = threshold
    return replace(layer, mask=mask, stats=stats, score=None)


def _resume_advice(order: Sequence[int], at: int) -> str:
    """What a run over blocks ``order`` that stopped at ``order[at]`` leaves, and the ``blocks=`` that continues it."""
    if at == 0:
        return "no block was pruned"
    rest = list(order[at:])
    # As Python, to paste: a run of consecutive blocks as their range, others as the list.
    todo = f"range({rest[0]}, {rest[-1] + 1})" if rest == list(range(rest[0], rest[-1] + 1)) else str(rest)
    return f"blocks before it are pruned, resume with blocks={todo}"


def _stopped_at(e: BaseException, where: str, resume: str) -> BaseException:
    """``e`` again, of its own type where that type takes one message, saying ``where`` it stopped and ``resume``.

    An OSError keeps its errno and filename. A type that cannot be made from the message, or that makes something else
    of it, gives a RuntimeError instead; either way the caller raises it ``from e``, so the original stays in the chain.
    """
    os_error = e if isinstance(e, OSError) and e.errno is not None else None
    # A bare KeyboardInterrupt (Ctrl-C), NotImplementedError or assert has no text: its type says what it was. An
    # OSError's str() repeats its errno and filename, which the new one carries and prints again.
    text = (os_error.strerror if os_error else None) or str(e) or type(e).__name__
    message = f"{where}: {text}; {resume}"
    try:
        if os_error:
            again: BaseException = type(e)(os_error.errno, message, os_error.filename, None, os_error.filename2)
        else:
            again = type(e)(message)
    except Exception:
        return RuntimeError(message)
    # By its args, not str(): KeyError's str() quotes its key, escaping what it holds.
    return again if message in again.args else RuntimeError(message)


def _check_blocks(blocks: Optional[Sequence[int]], n_blocks: int) -> List[int]:
    """The blocks to prune, in order: all, or ``blocks`` checked to be distinct indices of the model's blocks."""
    if blocks is None:
        return list(range(n_blocks))
    order: List[int] = []
    for b in blocks:
        # A bool is an int to Python; a float such as 2.0 is not an index.
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise ValueError(f"blocks: {b!r} is not a block index")
        if not 0 <= int(b) < n_blocks:
            raise ValueError(f"blocks: {int(b)} is not a block of this model's {n_blocks} (0 to {n_blocks - 1})")
        if int(b) in order:
            raise ValueError(f"blocks: {int(b)} is given twice (each block is pruned once)")
        order.append(int(b))
    return order


def _check_settings(
    method: str, pattern: str, sparsity: Optional[float], exponent: Optional[float], info: Mapping[str, Any]
) -> None:
    """Raises the ``invalid_request`` the server would answer for these settings (API.md, Request; the bounds from
    ``/v1/info``), before any calibration pass: every block's request would be refused alike."""
    def refuse(message: str) -> NoReturn:
        raise ZpruneError("invalid_request", f"{message}; no block was pruned", 422)

    limits = info.get("limits") or {}
    methods = info.get("methods") or ["zpruner", "wanda", "ria", "magnitude"]
    if method not in methods:
        refuse(f"method: {method!r} is none of {', '.join(methods)}")
    nm = _NM_PATTERN.fullmatch(pattern) if isinstance(pattern, str) else None
    max_m = int(limits.get("maxM", 9999))
    if pattern not in ("layer", "row") and not (nm and 0 < int(nm.group(1)) < int(nm.group(2)) <= max_m):
        refuse(f"pattern: {pattern!r} is not \"layer\", \"row\" or \"N:M\" with 0 < N < M <= {max_m}, such as \"2:4\"")
    if pattern in ("layer", "row"):
        if sparsity is None:
            refuse(f"sparsity: required for pattern {pattern!r}")
        value = _as_number(sparsity)
        if value is None or not 0 <= value < 1:
            refuse(f"sparsity: {sparsity!r} is not a number with 0 <= sparsity < 1")
    if exponent is not None:
        bounds = limits.get("exponent") or {}
        lo, hi = float(bounds.get("min", 0)), float(bounds.get("max", math.inf))
        value = _as_number(exponent)
        if value is None or not lo <= value <= hi:
            refuse(f"exponent: {exponent!r} is not a number from {lo:g} to {hi:g}")


def _as_number(x: Any) -> Optional[float]:
    """``float(x)``, the value ``prune_layers`` sends (a 0-d tensor or array, a Fraction, a numpy number), or None
    for what is no number there: a bool (the server refuses true and false), a string, or what float() refuses."""
    if isinstance(x, (bool, np.bool_, str, bytes)):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _send_block(
    client: ZpruneClient,
    bi: int,
    specs: List[Layer],
    dtype: Optional[WireDType],
    settings: Dict[str, Any],
    limits: Tuple[int, Optional[int]],
    keep: Optional[ModelPruneReport],
    resume: str,
) -> List[Any]:
    """The server's answers to block ``bi``'s layers, sent in as few requests as ``limits`` (body, budget) allow.

    Answers are kept in ``keep.responses`` when given. An error names the block and, where the server's message points
    at one, the layer, and ends with ``resume`` (``_resume_advice``).
    """
    answered: List[Any] = []
    for group in _batches(specs, dtype, *limits, settings["method"], "score" in settings.get("returns", ())):
        try:
            result = client.prune_layers(group, **settings)
        except (ValueError, TypeError) as e:  # a tensor the client could not encode (Layer names it)
            raise type(e)(f"block {bi}, {e}; {resume}") from e
        except ZpruneError as e:
            # A message about one layer names it by its field path in the request ("layers[3]..."): name it.
            at = re.match(r"layers\[(\d+)\]", e.message)
            one = group[int(at.group(1))] if at and int(at.group(1)) < len(group) else None
            where = f"block {bi}, {one.name}" if one else f"block {bi} ({', '.join(s.name for s in group)})"
            raise ZpruneError(e.code, f"{where}: {e.message}; {resume}", e.status, retry_after=e.retry_after,
                              request_id=e.request_id) from e
        answered.extend(result.layers)
        if keep is not None:
            keep.responses.append(result)
    return answered


def prune_model(
    model: Any,
    calibration_batches: Iterable[Any],
    url: Optional[str] = None,
    *,
    method: str = "zpruner",
    pattern: str = "layer",
    sparsity: Optional[float] = None,
    token: Optional[str] = None,
    exponent: Optional[float] = None,
    linears: Sequence[str] = LLAMA_LINEARS,
    blocks: Optional[Sequence[int]] = None,
    dtype: Optional[WireDType] = None,
    forward: Optional[Callable[[Any, Any], Any]] = None,
    stop_early: bool = True,
    cache_inputs: bool = False,
    progress: bool = True,
    client: Optional[ZpruneClient] = None,
    keep_responses: bool = False,
    layer_rule: str = "exact",
) -> ModelPruneReport:
    """Prunes a LLaMA-family PyTorch model block by block, in place, through the zprune server at ``url``.

    Args:
        model: a transformers-style causal LM (``model.model.layers[i].self_attn.q_proj`` ...).
        calibration_batches: batches of token ids ``[batch, seq]`` (or dicts/tuples passed on to the model); the
            number of calibration sequences is the total batch size. Materialised once into a list.
        url: the server (default ``$ZPRUNE_URL`` or ``http://127.0.0.1:8787``).
        method, pattern, sparsity, exponent: as ``ZpruneClient.prune_layers``.
        token: bearer token, if the server wants one.
        linears: the attribute paths of the linear layers of a block, relative to the block.
        blocks: indices of the blocks to prune, each once (default: all, in order).
        dtype: wire dtype of the weights (default: the weights' own dtype).
        forward: ``forward(model, batch)`` runs one batch (default: ``model(batch)``).
        stop_early: stop each calibration pass after the block being pruned (the rest cannot change its inputs).
        cache_inputs: instead of a pass through the whole model per block, capture the first block's inputs once
            and run only one block at a time, feeding each pruned block's outputs to the next (as SparseGPT and
            Wanda do): the same activations in linear rather than quadratic time. Needs blocks that take the
            hidden states as their first argument and return them (or a tuple starting with them); KV caches in
            the captured keyword arguments are dropped.
        progress: show a tqdm progress bar when tqdm is importable.
        client: a ready ``ZpruneClient`` (then ``url`` and ``token`` are ignored).
        keep_responses: keep every answer, masks included, in ``ModelPruneReport.responses`` (one per request: a
            block whose layers exceed the server's body limit or memory budget together is sent in several).
        layer_rule: for ``pattern="layer"``: ``"exact"`` applies the server's masks (exactly floor(sparsity x weights)
            of the lowest scores, ties by position); ``"le-kth"`` asks for the scores too and prunes every weight
            scored at most the (k+1)-th lowest (``mask_at_most_kth``), as the Wanda code base's layer-wide threshold and
            ``reference.json`` prune: k + 1 weights, more where scores tie there. The stats are those of the mask
            applied; ``responses`` keeps the server's own answers.

    Settings the server would refuse (``method``, ``pattern``, ``sparsity``, ``exponent``) raise ``ZpruneError``
    (``invalid_request``), and ``blocks`` other than distinct indices of the model's blocks ``ValueError``, before any
    calibration pass. A block is sent in as few requests as the server's ``maxBodyBytes`` and ``memoryBudgetBytes``
    (``GET /v1/info``) allow. A layer the server would refuse for its shape or size (columns not a multiple of M, over
    its ``maxLayerElements``, over the body limit or memory budget alone) raises ``ZpruneError`` with the server's code
    before any block is pruned, as does a NaN or infinite weight (``non_finite``); a weight past the range of ``dtype``
    and a batch without a batch dimension raise ``ValueError``. Any other error names the block and layers it stopped
    at; the blocks before it are pruned already, and the message ends with the ``blocks=`` that continues the run. An
    error in a calibration pass (the model or ``forward``, out of memory, Ctrl-C) is raised again so, as its own type
    where that type takes one message (else ``RuntimeError``), from the original.

    Returns:
        A ``ModelPruneReport`` with every layer's statistics.
    """
    import torch

    if layer_rule not in LAYER_RULES:
        raise ValueError(f"layer_rule must be one of {LAYER_RULES}, got {layer_rule!r}")
    if layer_rule != "exact" and pattern != "layer":
        raise ValueError(f"layer_rule {layer_rule!r} applies to pattern 'layer', not {pattern!r}")
    run = forward or _default_forward
    # A str is a Sequence[str] of its letters: linears="mlp.up_proj" means that one layer.
    linears = (linears,) if isinstance(linears, str) else tuple(linears)
    batches = list(calibration_batches)
    if not batches:
        raise ValueError("prune_model needs at least one calibration batch")
    if forward is None:  # a forward of the caller's own may take other batches
        _check_batches(calibration_batches, batches)
    nseq = sum(_count_sequences(b) for b in batches)
    client = client or ZpruneClient(url, token)
    decoder = model.model.layers
    order = _check_blocks(blocks, len(decoder))
    if cache_inputs and order and order != list(range(order[0], order[0] + len(order))):
        raise ValueError("cache_inputs needs consecutive blocks in ascending order")
    info = client.info()
    _check_settings(method, pattern, sparsity, exponent, info)
    limits = info["limits"]
    _check_model_fits(decoder, order, linears, pattern, dtype, limits, method, layer_rule != "exact")
    max_body = int(limits["maxBodyBytes"])
    budget = int(limits["memoryBudgetBytes"]) if limits.get("memoryBudgetBytes") is not None else None
    report = ModelPruneReport()
    was_training = bool(getattr(model, "training", False))
    model.eval()
    cached: Optional[List[Tuple[Tuple[Any, ...], Dict[str, Any]]]] = None
    try:
        for at, bi in enumerate(_progress(order, len(order), progress)):
            block = decoder[bi]
            resume = _resume_advice(order, at)
            # The caller's forward, the model or its layers may fail here (out of memory, a missing linear, Ctrl-C):
            # as for a refused request, say where the run stopped and how to go on.
            try:
                mods = [(name, block.get_submodule(name)) for name in linears]
                if cache_inputs and cached is None:
                    cached = _capture_inputs(model, block, batches, run)
                sums = _input_sums(model, block, mods, batches, run, cached, stop_early)
            except (Exception, KeyboardInterrupt) as e:
                raise _stopped_at(e, f"block {bi}, calibration pass", resume) from e
            prefix = f"model.layers.{bi}."
            specs = []
            for name, mod in mods:
                if name not in sums:
                    raise RuntimeError(f"block {bi}, {prefix}{name} saw no input during calibration; {resume}")
                specs.append(Layer(prefix + name, mod.weight.detach(), (sums[name] / nseq).cpu(), None, dtype))
            settings: Dict[str, Any] = dict(method=method, pattern=pattern, sparsity=sparsity, exponent=exponent)
            if layer_rule != "exact":  # the masks are rebuilt from the scores
                settings["returns"] = ("mask", "score")
            keep = report if keep_responses else None
            answered = _send_block(client, bi, specs, dtype, settings, (max_body, budget), keep, resume)
            if layer_rule != "exact":
                answered = [_at_most_kth_layer(layer) for layer in answered]
            with torch.no_grad():
                for (_, mod), layer in zip(mods, answered):
                    apply_mask(mod.weight, layer.mask)
                    report.stats[layer.name] = layer.stats
                    report.pruned += int(layer.stats["pruned"])
                    report.total += int(layer.stats["total"])
                # The pruned block's outputs are the next block's inputs; the last block's would feed none.
                if cached is not None and bi != order[-1]:
                    try:
                        cached = [_next_inputs(block(*args, **kwargs), args, kwargs) for args, kwargs in cached]
                    except (Exception, KeyboardInterrupt) as e:
                        where = f"block {bi} (pruned), its outputs for block {order[at + 1]}"
                        raise _stopped_at(e, where, _resume_advice(order, at + 1)) from e
    finally:
        model.train(was_training)
    return report
