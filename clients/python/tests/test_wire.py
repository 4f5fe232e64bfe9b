"""Wire helpers: bf16 bits in either byte order, finite values that a narrower dtype would make infinite, apply_mask
on numpy and torch, 0-d arrays, and the memory a request body and an answer take."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any, Tuple

import msgpack
import numpy as np
import pytest

from zprune_client import ZpruneClient, apply_mask, bf16_bits_to_float32, float32_to_bf16_bits
from zprune_client.client import Layer
from zprune_client.wire import decode_tensor, encode_request, encode_tensor, to_numpy


def test_bf16_bits_in_either_byte_order_are_sent_little_endian() -> None:
    values = np.array([1.0, 2.0, -3.5, 1e-3], np.float32)
    bits = float32_to_bf16_bits(values)
    want = bits.astype("<u2").tobytes()
    for dtype in ("<u2", ">u2", "<i2", ">i2"):
        sent = encode_tensor(bits.astype(dtype), "bf16")["data"]
        assert bytes(sent) == want, dtype
        widened = bf16_bits_to_float32(bits.astype(dtype))
        np.testing.assert_array_equal(widened[:3], values[:3], err_msg=dtype)  # exact in bf16
        assert abs(widened[3] - 1e-3) < 1e-5, dtype
    # The bf16 of 1.0 is 0x3f80: little-endian bytes 80 3f.
    assert want[:2] == bytes([0x80, 0x3F])


def test_bf16_rounding_keeps_every_nan_a_nan() -> None:
    # Rounding adds 0x7FFF and the kept lowest bit to the float32 bits: a NaN whose low mantissa bits are set would
    # carry into the exponent (0x7F800001 to infinity) or past 32 bits (0xFFFFFFFF to +0, 0x7FFFFFFF to -0): a
    # weight the server prunes as zero instead of refusing it. The expectation is IEEE 754's NaN, not another
    # implementation's: all exponent bits set, a nonzero mantissa, quiet (its top mantissa bit), the sign kept.
    nans = np.array([0x7F800001, 0x7FBFFFFF, 0x7FC00000, 0x7FFFFFFF, 0xFF800001, 0xFFC00000, 0xFFFFFFFF], np.uint32)
    for bits, how in ((float32_to_bf16_bits(nans.view(np.float32)), "float32_to_bf16_bits"),
                      (to_numpy(nans.view(np.float32), "bf16")[0], "to_numpy(dtype='bf16')")):
        got = [hex(b) for b in bits]
        assert np.all(bits & 0x7F80 == 0x7F80) and np.all(bits & 0x7F != 0), f"{how}: {got} not all NaN"
        assert np.all(bits & 0x40 == 0x40), f"{how}: {got} not all quiet"
        np.testing.assert_array_equal(bits >> 15, nans >> 31, err_msg=f"{how}: signs of {got}")
        assert np.isnan(bf16_bits_to_float32(bits)).all(), how


def test_apply_mask_numpy() -> None:
    w = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    mask = np.array([[True, False, False, True], [False, False, True, False]])
    assert apply_mask(w, mask) == 3
    np.testing.assert_array_equal(w, [[0, 2, 3, 0], [5, 6, 0, 8]])
    with pytest.raises(ValueError):
        apply_mask(w, mask.T)


def test_apply_mask_torch_zeroes_the_masked_entries() -> None:
    torch = pytest.importorskip("torch")
    # torch reads a 2-D numpy array as a tuple of index arrays: w[mask] = 0 would zero (0, 0) only, or fail.
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert apply_mask(w, np.array([[True, False], [True, False]])) == 2
    assert w.tolist() == [[0.0, 2.0], [0.0, 4.0]]
    big = torch.arange(1, 16 * 32 + 1, dtype=torch.float32).reshape(16, 32).to(torch.bfloat16)
    mask = (np.arange(16 * 32).reshape(16, 32) % 3) == 0
    apply_mask(big, mask)
    got = big.float().numpy()
    assert (got[mask] == 0).all() and (got[~mask] != 0).all()


def test_apply_mask_torch_parameters_and_awkward_masks() -> None:
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(4, 3)  # its weight requires grad
    mask = np.zeros((3, 4), bool)
    mask[:, 1] = True
    assert apply_mask(layer.weight, mask[::-1]) == 3  # negative strides
    assert (layer.weight[:, 1] == 0).all() and (layer.weight[:, 0] != 0).all()

    class MyParam(torch.nn.Parameter):  # a subclass from another module is still a torch tensor
        pass

    w = MyParam(torch.ones(2, 2), requires_grad=False)
    apply_mask(w, np.broadcast_to(np.array([[True], [False]]), (2, 2)))  # read-only
    assert w.tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_bf16_bits_to_float32_refuses_other_data() -> None:
    with pytest.raises(TypeError):
        bf16_bits_to_float32(np.ones(4, np.float32))


# The smallest magnitudes that round to infinity (round to nearest, ties to even: each format's largest finite value
# has an odd significand, so the halfway point rounds up): f16 65504 + 16, bf16 0x7F7F8000 as float32, and float32
# 2^128 - 2^103 from float64.
OVERFLOW = {
    "f16": (np.float32, 65520.0),
    "bf16": (np.float32, float(np.uint32(0x7F7F8000).view(np.float32))),
    "f32": (np.float64, 2.0**128 - 2.0**103),
}


@pytest.mark.parametrize("wire", sorted(OVERFLOW))
def test_finite_values_that_would_become_infinite_are_refused_by_name(wire: str) -> None:
    src_type, edge = OVERFLOW[wire]
    below = np.nextafter(src_type(edge), src_type(0))
    fits = np.array([[1.0, -below], [below, np.inf]], dtype=src_type)  # an infinity sent as such is the server's call
    arr, sent = to_numpy(fits, wire)
    assert sent == wire
    over = fits.copy()
    over[1, 0] = -edge
    with pytest.raises(ValueError, match=r"1 finite value is beyond the range of " + wire + r".*index \[1, 0\]"):
        to_numpy(over, wire)
    with pytest.raises(ValueError, match=r"layer 'q', inputs: "):
        Layer("q", np.ones((2, 2), np.float32), inputs=over, dtype=None if wire == "f32" else wire).to_wire()


def test_overflow_advice_names_a_dtype_that_holds_the_values_or_none() -> None:
    import torch

    big = np.full((2, 2), 1e5, np.float32)
    with pytest.raises(ValueError, match="leave dtype unset to send them as f32"):
        to_numpy(big, "f16")
    with pytest.raises(ValueError, match="leave dtype unset to send them as bf16"):
        to_numpy(torch.full((2, 2), 1e5, dtype=torch.bfloat16), "f16")  # unset, a bf16 tensor goes out as bf16
    with pytest.raises(ValueError, match=r"no dtype on the wire holds them \(f32 is the widest\)"):
        to_numpy(np.full((2, 2), 1e39), "f16")
    with pytest.raises(ValueError, match="2 finite values are"):
        to_numpy(np.array([1e39, -1e39, 1.0]), None)


def _traced_peak(fn: Any) -> Tuple[Any, int]:
    """``fn()`` and the most bytes it held at once beyond what was held before (numpy's arrays included)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_bf16_rounding_of_a_big_layer_holds_few_copies_of_it() -> None:
    torch = pytest.importorskip("torch")
    # Every upper half with the lower halves where rounding turns: below, at and above the halfway point, odd or even.
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    low = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    x = (high[:, None] | low[None, :]).ravel().view(np.float32)
    x = x[~np.isnan(x)]  # NaN payloads aside; infinities kept
    bits, peak = _traced_peak(lambda: float32_to_bf16_bits(x))
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, want)
    # Its float32 bytes once, and the bits: 64-bit temporaries held seven times the float32 bytes at once.
    assert peak <= 1.6 * x.nbytes, f"{peak / x.nbytes:.2f} times the float32 bytes"
    # The same sent as bf16, with the check that no finite value became infinite: no copy of the float32 first.
    finite = x[np.isfinite(x) & (np.abs(x) < 1e38)]
    (sent, dtype), peak = _traced_peak(lambda: to_numpy(finite, "bf16"))
    assert dtype == "bf16" and np.array_equal(sent, float32_to_bf16_bits(finite))
    assert peak <= 1.6 * finite.nbytes, f"{peak / finite.nbytes:.2f} times the float32 bytes"


def test_a_request_holds_one_copy_of_the_weights(server_url: str) -> None:
    w = np.random.default_rng(3).standard_normal((512, 1024), dtype=np.float32)
    client = ZpruneClient(server_url)
    result, peak = _traced_peak(lambda: client.prune_layers([("a", w, None)], method="magnitude", sparsity=0.5))
    assert int(result.layers[0].mask.sum()) == w.size // 2
    # The body (w's bytes once), then the answer and its mask (a byte per weight); tobytes, msgpack's buffer and the
    # bytes made of it held 3 copies at once.
    assert peak <= 1.6 * w.nbytes, f"{peak / w.nbytes:.2f} times the weights' bytes"


def test_an_answers_tensors_are_not_copied_on_the_way_in(server_url: str) -> None:
    w = np.random.default_rng(5).standard_normal((1024, 2048), dtype=np.float32)
    client = ZpruneClient(server_url)
    result, peak = _traced_peak(lambda: client.prune_layers([("a", w, None)], method="magnitude", sparsity=0.5,
                                                            returns=("weight",)))
    got = result.layers[0]
    assert got.weight is not None and np.array_equal(got.weight, np.where(got.mask, 0, w))
    # The request (w's bytes) while the answer (about w's bytes) arrives, then the answer and the bytes msgpack
    # decodes from it, then those bytes with the mask (a byte per weight). The answer read in chunks and joined, the
    # request held while it was decoded and the weights copied out of msgpack's bytes made 3.25 times w's bytes.
    assert peak <= 2.6 * w.nbytes, f"{peak / w.nbytes:.2f} times the weights' bytes"
    assert got.mask.flags.writeable and not got.weight.flags.writeable  # as README.md says


def test_encode_request_writes_what_msgpack_writes() -> None:
    big = np.arange(1 << 15, dtype=np.float32)
    body = {"method": "wanda", "sparsity": 0.25, "return": ["mask", "score"], "options": {"dataFree": True},
            "layers": [Layer("a", big.reshape(128, 256), big[:256]).to_wire(copy=False),
                       Layer("b", big[:12].reshape(3, 4), None).to_wire(), ("x" * 70000).encode()]}
    assert encode_request(body) == msgpack.packb(body, use_bin_type=True)


def test_encode_request_holds_nothing_once_it_returns() -> None:
    # A closure that called itself was a reference cycle: it kept msgpack's Packer, and its 1 MiB buffer, until the
    # next garbage collection.
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        body = encode_request({"method": "wanda", "layers": [Layer("a", np.ones((4, 4), np.float32)).to_wire()]})
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert held <= len(body) + 4096, f"{held} bytes held for a body of {len(body)}"
        assert gc.collect() == 0, "encode_request left cyclic garbage behind"
    finally:
        gc.enable()


def test_a_layer_name_utf8_cannot_carry_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"layer 'q\\ud800': its name holds a lone surrogate"):
        Layer("q\ud800", np.ones((2, 2), np.float32)).to_wire()
    # A pair (one code point past U+FFFF) is valid UTF-8, and travels as sent.
    assert msgpack.unpackb(encode_request(Layer("q\U0001f600", np.ones((2, 2), np.float32)).to_wire()))["name"] == (
        "q\U0001f600"
    )


@pytest.mark.parametrize("dtype", [None, "f32", "f16", "bf16"])
def test_a_0d_array_keeps_its_shape_of_no_dimensions(dtype: Any) -> None:
    torch = pytest.importorskip("torch")
    # API.md's Tensor has a shape of any rank, product(shape) elements: [] is one element, [1] is another shape.
    # np.ascontiguousarray returns at least one dimension, which sent a 0-d array (or tensor) as [1].
    for x in (np.array(2.5, np.float32), np.float64(2.5), np.float16(2.5), torch.tensor(2.5),
              torch.tensor(2.5, dtype=torch.bfloat16)):
        t = encode_tensor(x, dtype)
        assert t["shape"] == [], (x, dtype, t["shape"])
        back = decode_tensor(t, bf16="float32")
        assert back.shape == () and float(back) == 2.5, (x, dtype)  # 2.5 is exact in every wire dtype
    bits = encode_tensor(np.uint16(0x4020), "bf16")  # raw bf16 bits of 2.5
    assert bits["shape"] == [] and bytes(bits["data"]) == bytes([0x20, 0x40])
    assert float32_to_bf16_bits(np.float32(2.5)).shape == () and bf16_bits_to_float32(np.uint16(0x4020)).shape == ()


def _layer_with(field: str, value: Any) -> Layer:
    layer = Layer("q", np.ones((3, 1), np.float32))
    setattr(layer, field, value)
    return layer


RANKS = [
    ("weight", np.float32(1.0), r"weight: expected shape \[rows, cols\], got \[\]"),
    ("weight", np.ones(3, np.float32), r"weight: expected shape \[rows, cols\], got \[3\]"),
    ("weight", np.ones((3, 1, 1), np.float32), r"weight: expected shape \[rows, cols\], got \[3, 1, 1\]"),
    ("act_norm_sq", np.float32(1.0), r"act_norm_sq: expected shape \[cols\], got \[\]"),
    ("act_norm_sq", np.ones((1, 1), np.float32), r"act_norm_sq: expected shape \[cols\], got \[1, 1\]"),
    ("inputs", np.float32(1.0), r"inputs: expected shape \[tokens, cols\], got \[\]"),
    ("inputs", np.ones(1, np.float32), r"inputs: expected shape \[tokens, cols\], got \[1\]"),
]


@pytest.mark.parametrize("field,value,message", RANKS)
def test_a_layer_tensor_of_another_rank_than_api_md_says_is_refused_by_name(field: str, value: Any,
                                                                            message: str) -> None:
    # A weight of 1 column takes an actNormSq of shape [1]: a 0-d one went out as [1] and was pruned with it.
    with pytest.raises(ValueError, match=r"layer 'q', " + message):
        _layer_with(field, value).to_wire()
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"layer 'q', " + message):
        _layer_with(field, torch.from_numpy(np.asarray(value))).to_wire()
    assert _layer_with(field, np.ones({"weight": (3, 1), "act_norm_sq": (1,), "inputs": (5, 1)}[field],
                                      np.float32)).to_wire()["name"] == "q"  # API.md's shapes go out


def test_encode_tensor_sends_the_array_s_own_dtype_in_row_major_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert encode_tensor(a)["data"] == a.tobytes()
    # Row-major whatever the array's memory order (a transposed view, a Fortran-ordered copy).
    assert encode_tensor(np.asfortranarray(a))["data"] == a.tobytes()
    assert bytes(encode_tensor(np.asfortranarray(a), copy=False)["data"]) == a.tobytes()
    # float16 goes as f16: not widened to f32, which would double the body.
    h = np.arange(4, dtype=np.float16).reshape(2, 2)
    t = encode_tensor(h)
    assert (t["dtype"], t["shape"], t["data"]) == ("f16", [2, 2], h.astype("<f2").tobytes())


def test_a_torch_bfloat16_tensor_goes_as_bf16() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.bfloat16)
    t = encode_tensor(x)
    bits = x.view(torch.int16).numpy().astype("<i2").tobytes()
    assert (t["dtype"], t["shape"], t["data"]) == ("bf16", [2, 2], bits)


def test_pack_mask_is_row_major_least_significant_bit_first() -> None:
    from zprune_client import pack_mask, unpack_mask

    m = np.zeros((2, 8), bool)
    m[0, 0] = m[1, 7] = True
    assert pack_mask(m) == b"\x01\x80"
    assert np.array_equal(unpack_mask(b"\x01\x80", (2, 8)), m)


def test_apply_mask_refuses_a_mask_of_another_shape_on_a_torch_tensor() -> None:
    torch = pytest.importorskip("torch")
    w = torch.ones(4, 8)
    with pytest.raises(ValueError, match=r"mask of shape \[1, 8\] for a weight of shape \[4, 8\]"):
        apply_mask(w, np.ones((1, 8), bool))
    assert bool((w == 1).all()), "nothing zeroed"
