"""Encoding and decoding of the wire format of ``POST /v1/prune`` (API.md, contract version 1).

Pure functions over numpy arrays and msgpack; torch tensors are accepted where a tensor is expected but torch is
never imported here (it is recognised by duck typing), so the client works without it.

Tensors travel as ``{dtype: "f32" | "f16" | "bf16", shape: [...], data: bin}``, little-endian and row-major.
numpy has no bfloat16: a bf16 tensor is held as a ``uint16`` (or ``int16``) array of its raw 16 bits, and passed with
``dtype="bf16"``. Masks come back bit-packed, least significant bit first within each byte, 1 = pruned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple

import sys

import msgpack
import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

#: Element types of the wire format.
WireDType = Literal["f32", "f16", "bf16"]

#: Anything the client accepts as a tensor: a numpy array, a torch tensor, or a nested sequence of floats.
ArrayLike = Any

#: Bytes per element of each wire dtype.
DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2}

_NUMPY_LE: Dict[str, "np.dtype[Any]"] = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "bf16": np.dtype("<u2")}


def _contiguous(x: Any, dtype: Any) -> NDArray[Any]:
    """``x`` as a C-contiguous array of ``dtype``, a copy only where it is not one already. Not
    ``np.ascontiguousarray``, which returns at least one dimension: a 0-d array would be sent as shape [1], another
    shape than its own (API.md's [] holds one element too)."""
    return np.asarray(x, dtype=dtype, order="C")

__all__ = [
    "WireDType",
    "DTYPE_BYTES",
    "encode_tensor",
    "decode_tensor",
    "float32_to_bf16_bits",
    "bf16_bits_to_float32",
    "apply_mask",
    "unpack_mask",
    "pack_mask",
    "encode_request",
    "decode_body",
    "to_numpy",
]


def float32_to_bf16_bits(x: NDArray[Any]) -> NDArray[np.uint16]:
    """Rounds float32 values to bfloat16 (round to nearest, ties to even) and returns their raw bits as ``uint16``.

    NaN stays NaN (quiet). Used when a float array is sent with ``dtype="bf16"``.
    """
    f = _contiguous(x, np.float32)
    u = f.view(np.uint32)
    # In place in one uint32 array: a layer's weights take 1.5 times their float32 bytes here, not 7 (uint64
    # temporaries). No finite value or infinity carries past 32 bits (0xFF7FFFFF + 0x8000 < 2^32); a NaN may, and is
    # replaced below.
    rounded = u >> 16
    rounded &= 1
    rounded += 0x7FFF
    rounded += u
    rounded >>= 16
    out = rounded.astype(np.uint16)
    del rounded
    nan = np.isnan(f)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def bf16_bits_to_float32(bits: NDArray[Any]) -> NDArray[np.float32]:
    """Widens raw bfloat16 bits (``uint16`` or ``int16``, either byte order) to float32, exactly."""
    arr = np.asarray(bits)
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize != 2:
        raise TypeError(f"expected 16-bit integers holding bfloat16 bits, got {arr.dtype}")
    # astype converts values (so byte order is honoured and int16's sign bit is kept by the wrap), where a view
    # would reinterpret a big-endian array's bytes.
    b = (arr.astype(np.uint32) & 0xFFFF) << 16
    return _contiguous(b, np.uint32).view(np.float32)


def _is_torch(x: Any) -> bool:
    # A torch tensor (subclasses such as nn.Parameter included) can exist only once torch is imported.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: ArrayLike, dtype: Optional[WireDType] = None) -> Tuple[NDArray[Any], WireDType]:
    """Converts a numpy array, torch tensor or nested list to a C-contiguous little-endian array and its wire dtype.

    - float32 → ``f32``, float16 → ``f16``; torch bfloat16 → ``bf16`` (its raw bits, via ``.view(torch.int16)``).
    - float64 and Python lists or tuples (of floats or integers) become ``f32`` unless ``dtype`` says otherwise.
    - A ``uint16``/``int16`` array is only accepted with ``dtype="bf16"`` and is taken as raw bfloat16 bits.
    - With an explicit ``dtype``, float data is converted to it (float32 → bf16 rounds to nearest even).

    Raises ``TypeError`` for an integer array or tensor (token ids, say, passed by mistake), and for boolean or complex
    data.
    """
    if dtype is not None and dtype not in DTYPE_BYTES:
        raise ValueError(f'dtype must be "f32", "f16" or "bf16", got {dtype!r}')
    if _is_torch(x):
        t = x.detach().cpu().contiguous()
        tname = str(t.dtype).replace("torch.", "")
        if tname == "bfloat16":
            bits = t.view(_torch_int16(t)).numpy().view(np.uint16)
            if dtype in (None, "bf16"):
                return _contiguous(bits, "<u2"), "bf16"
            wide = bf16_bits_to_float32(bits)
            out, wire = _float_to_wire(wide, dtype)
            _refuse_overflow(wide, out, wire, own="bf16")
            return out, wire
        arr: NDArray[Any] = t.numpy()
    else:
        arr = np.asarray(x)
        if isinstance(x, (list, tuple)) and arr.dtype.kind in "iu":
            arr = arr.astype(np.float64)  # numbers written as [1, 2, 3]: a list has no dtype to be wrong about
    kind = arr.dtype.kind
    if kind == "f":
        out, wire = _float_to_wire(arr, dtype)
        _refuse_overflow(arr, out, wire, own=_own_dtype(arr))
        return out, wire
    if kind in "iu" and arr.dtype.itemsize == 2 and dtype == "bf16":
        # Little-endian first (a no-op for a little-endian array; a big-endian one holds the same bits in the other
        # byte order), then the int16/uint16 view of those bytes.
        return _contiguous(arr, arr.dtype.newbyteorder("<")).view("<u2"), "bf16"
    if kind in "iu" and arr.dtype.itemsize == 2:
        raise TypeError('a 16-bit integer array is taken as raw bfloat16 bits only with dtype="bf16"')
    raise TypeError(f"expected float32, float16 or bfloat16 data, got {arr.dtype}")


def _own_dtype(arr: NDArray[Any]) -> WireDType:
    """The wire dtype of a numpy float array when none is forced: f16 for 16-bit floats, f32 for the rest."""
    return "f16" if arr.dtype.itemsize == 2 else "f32"


def _float_to_wire(arr: NDArray[Any], dtype: Optional[WireDType]) -> Tuple[NDArray[Any], WireDType]:
    """A float array in its wire dtype: ``dtype``, else its own (``_own_dtype``)."""
    wire: WireDType = dtype if dtype is not None else _own_dtype(arr)
    with np.errstate(over="ignore"):  # an overflow is refused by _refuse_overflow, with the values named
        if wire == "bf16":
            # float32_to_bf16_bits makes float32 of other data itself: a float32 array is not copied first.
            return _contiguous(float32_to_bf16_bits(arr), "<u2"), "bf16"
        return _contiguous(arr, _NUMPY_LE[wire]), wire


def _refuse_overflow(src: NDArray[Any], out: NDArray[Any], wire: WireDType, own: WireDType) -> None:
    """Raises ``ValueError`` where converting ``src`` to ``wire`` made a finite value infinite: the server would
    refuse the request as ``non_finite`` and point at data that was finite on this side. ``own`` is the dtype
    ``src`` goes out in when ``dtype`` is left unset, which the message suggests where it holds the values."""
    if src.dtype.itemsize <= DTYPE_BYTES[wire]:
        return  # no narrowing (f16 into f32 or bf16, f32 into f32): every finite value stays finite
    inf = (out.view(np.uint16) & 0x7FFF) == 0x7F80 if wire == "bf16" else np.isinf(out)
    bad = inf & np.isfinite(src)
    if not bad.any():
        return
    at = tuple(int(i) for i in np.argwhere(bad)[0])
    count = int(bad.sum())
    with np.errstate(over="ignore"):
        own_holds = own != wire and bool(np.isfinite(src[bad].astype(np.float32)).all())  # bf16's range is f32's
    fix = (
        f"leave dtype unset to send them as {own}"
        if own_holds
        else "no dtype on the wire holds them (f32 is the widest): scale them down"
    )
    raise ValueError(
        f"{count} finite value{' is' if count == 1 else 's are'} beyond the range of {wire} (the first, "
        f"{float(src[at])!r}, at index {list(at)}) and would be sent as infinity; {fix}"
    )


def _torch_int16(t: Any) -> Any:
    import torch  # only reached with a torch tensor in hand

    return torch.int16


def encode_tensor(x: ArrayLike, dtype: Optional[WireDType] = None, *, copy: bool = True) -> Dict[str, Any]:
    """Returns the wire form ``{dtype, shape, data}`` of ``x`` (see ``to_numpy`` for the accepted inputs).

    With ``copy=False``, ``data`` is a memoryview of the bytes to send, which are ``x``'s own where they need no
    conversion (a C-contiguous little-endian float32 array, say): encode it before ``x`` changes.
    """
    arr, wire = to_numpy(x, dtype)
    data = arr.tobytes(order="C") if copy else arr.reshape(-1).view(np.uint8).data
    return {"dtype": wire, "shape": [int(s) for s in arr.shape], "data": data}


def decode_tensor(t: Mapping[str, Any], bf16: Literal["bits", "float32"] = "bits") -> NDArray[Any]:
    """Decodes a wire tensor to numpy: ``f32`` → float32, ``f16`` → float16, ``bf16`` → uint16 bits (or float32).

    The array is a view of ``data`` (read-only where ``data`` is ``bytes``, as msgpack decodes ``bin``), not a copy:
    an answer's tensors are not held twice. Copied only for ``bf16="float32"``, and where the machine's byte order is
    not the wire's little-endian.
    """
    dtype = t["dtype"]
    if dtype not in _NUMPY_LE:
        raise ValueError(f"unknown tensor dtype {dtype!r}")
    shape = tuple(int(s) for s in t["shape"])
    arr = np.frombuffer(t["data"], dtype=_NUMPY_LE[dtype]).reshape(shape)
    if dtype == "bf16" and bf16 == "float32":
        return bf16_bits_to_float32(arr)
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def unpack_mask(data: bytes, shape: Sequence[int]) -> NDArray[np.bool_]:
    """Unpacks a bit-packed mask (bit i of the row-major order, LSB first; 1 = pruned) to a bool array of ``shape``."""
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"mask has {raw.size} bytes, expected {(n + 7) // 8} for shape {list(shape)}")
    # unpackbits writes 0 and 1 bytes, which are numpy's False and True: viewed as bool, not copied (a byte a weight).
    return np.unpackbits(raw, count=n, bitorder="little").view(np.bool_).reshape(tuple(shape))


def apply_mask(weight: Any, mask: NDArray[Any]) -> int:
    """Zeroes, in place, the entries of ``weight`` (a numpy array, or a torch tensor on any device) where ``mask`` is
    True; returns how many. ``weight[mask] = 0`` is not safe for a torch tensor: torch may read a 2-D numpy array
    as a tuple of index arrays (an ``IndexError``, or other entries zeroed, for small tensors)."""
    m = np.asarray(mask, dtype=bool)
    if tuple(weight.shape) != m.shape:
        raise ValueError(f"mask of shape {list(m.shape)} for a weight of shape {list(weight.shape)}")
    if _is_torch(weight):
        import torch

        # no_grad: a model's weights are leaves that require grad, which refuse in-place edits otherwise.
        with torch.no_grad():
            # torch refuses a numpy array with negative strides and warns on a read-only one: copy only those.
            owned = m if m.flags.c_contiguous and m.flags.writeable else m.copy()
            weight.masked_fill_(torch.from_numpy(owned).to(weight.device), 0)
    else:
        weight[m] = 0
    return int(m.sum())


def pack_mask(mask: NDArray[Any]) -> bytes:
    """Packs a bool array the way the server does (row-major, LSB first). The inverse of ``unpack_mask``."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel(), bitorder="little").tobytes()


#: Bytes from which a ``bin`` value goes into a request body as it is, rather than through msgpack's buffer.
_JOINED_BIN = 1 << 16


def encode_request(body: Mapping[str, Any]) -> bytes:
    """Serialises a request map: plain msgpack, ``bin`` for bytes, no ext types.

    The same bytes as ``msgpack.packb(body, use_bin_type=True)``, with one copy of each tensor's data in them:
    ``packb`` copies it into its buffer and then the buffer into the bytes it returns (two more copies of a
    layer's weights at the peak). Here large ``bin`` values are joined into the body as they are.
    """
    pieces: List[Any] = []
    _pack_into(pieces, msgpack.Packer(use_bin_type=True), body)
    return b"".join(pieces)


def _pack_into(pieces: List[Any], packer: Any, value: Any) -> None:
    """Appends the msgpack pieces of ``value`` to ``pieces``. A function of the module, not a closure inside
    ``encode_request``: a closure that calls itself is a reference cycle, which kept the Packer's 1 MiB buffer (and
    the pieces, tensors converted for the wire included) until the next garbage collection."""
    if isinstance(value, dict):
        pieces.append(packer.pack_map_header(len(value)))
        for k, v in value.items():
            _pack_into(pieces, packer, k)
            _pack_into(pieces, packer, v)
    elif isinstance(value, (list, tuple)):
        pieces.append(packer.pack_array_header(len(value)))
        for v in value:
            _pack_into(pieces, packer, v)
    elif isinstance(value, (bytes, bytearray, memoryview)) and _JOINED_BIN <= memoryview(value).nbytes < 1 << 32:
        pieces.append(b"\xc6" + memoryview(value).nbytes.to_bytes(4, "big"))  # bin 32, as packb writes it
        pieces.append(value)
    else:
        pieces.append(packer.pack(value))


def decode_body(data: bytes) -> Any:
    """Parses a msgpack answer (strings as ``str``, ``bin`` as ``bytes``)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)

