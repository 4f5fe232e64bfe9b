"""Wire helpers without a server: bf16 bits in either byte order, and apply_mask on numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest

from zprune_client import apply_mask, bf16_bits_to_float32, float32_to_bf16_bits
from zprune_client.wire import encode_tensor


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
