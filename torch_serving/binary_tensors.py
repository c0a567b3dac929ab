"""The binary form of the Open Inference Protocol's tensors, in numpy: the one table of V2
datatypes and numpy dtypes, used by the Python client, KServe V1's endpoint and the gRPC
service. Loads no torch.

A tensor's binary form is its elements, little-endian and row-major; a BYTES element is
its length (4 bytes, little-endian) followed by its bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

__all__ = ["NUMPY_TYPES", "V2_TYPES", "as_bytes", "bfloat16", "from_binary", "object_array", "to_binary"]

# V2 datatypes of numpy dtypes (BYTES are object arrays, BF16 is ml_dtypes' bfloat16), and back.
V2_TYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}
NUMPY_TYPES = {name: dtype for dtype, name in V2_TYPES.items()}
_LENGTH = struct.Struct("<I")


def bfloat16() -> np.dtype:
    """numpy's dtype for BF16, which numpy has not: ml_dtypes'."""
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError("V2's BF16 needs the ml_dtypes package (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def as_bytes(item: Any) -> bytes:
    """A BYTES element as bytes: text as UTF-8."""
    return item.encode() if isinstance(item, str) else bytes(item)


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    """The binary form of ``array`` as V2's ``datatype``."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(data)) + data for data in map(as_bytes, array.flatten().tolist()))
    return np.ascontiguousarray(array).tobytes()


def from_binary(raw: bytes | memoryview, datatype: str) -> np.ndarray:
    """The flat array whose binary form as ``datatype`` is ``raw``: BYTES as an object array of ``bytes``."""
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            (length,) = _LENGTH.unpack_from(raw, offset)
            items.append(bytes(raw[offset + 4 : offset + 4 + length]))
            offset += 4 + length
        return object_array(items)
    dtype = bfloat16() if datatype == "BF16" else NUMPY_TYPES[datatype]
    return np.frombuffer(raw, dtype=dtype).copy()


def object_array(items: list[bytes]) -> np.ndarray:
    """A flat object array of ``items`` (numpy would make a 2-D array of equal-length sequences)."""
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array
