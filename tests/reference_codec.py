"""A plain-Python reading of the protocol, to check the native codec against.

It handles valid documents only; error handling is tested message by message.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

DTYPES = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _element(value):
    return _SPECIAL[value] if isinstance(value, str) else value


def _nested(value):
    return [_nested(v) for v in value] if isinstance(value, list) else _element(value)


def decode(body: bytes) -> list:
    """Decode a valid request body into Python values and tensors."""
    doc = json.loads(body)
    return [_typed(item) for item in (doc if isinstance(doc, list) else [doc])]


def _tensor(obj: dict) -> torch.Tensor:
    dtype = DTYPES[obj.get("data_type", "float32")]
    if "shape" in obj:
        flat = [_element(v) for v in obj["value"]]
        return torch.tensor(flat, dtype=dtype).reshape(obj["shape"])
    return torch.tensor(_nested(obj["value"]), dtype=dtype)


def _typed(obj: dict):
    kind = obj["type"]
    if kind == "tensor":
        return _tensor(obj)
    if kind == "tensor_list":
        return [_tensor(t) for t in obj["value"]]
    if kind == "tensor_dict":
        return {k: _tensor(t) for k, t in obj["value"].items()}
    if kind == "scalar":
        value = _element(obj["value"])
        dtype = obj.get("data_type")
        if dtype is None:
            return value
        if dtype == "bool":
            return bool(value)
        return float(value) if DTYPES[dtype].is_floating_point else int(value)
    if kind == "string":
        return obj["value"]
    if kind == "list":
        items = [_typed(v) for v in obj["value"]]
        if any(isinstance(v, float) for v in items):
            items = [float(v) for v in items]
        return items
    if kind == "none":
        return None
    raise ValueError(kind)


def _shortest(value: float, dtype: torch.dtype) -> float:
    """Return the double read from the shortest text of ``value`` in ``dtype``."""
    if dtype == torch.float32:
        return float(str(np.float32(value)))
    if dtype == torch.float16:
        return float(str(np.float16(value)))
    if dtype == torch.bfloat16:
        for digits in range(1, 10):
            text = f"{value:.{digits - 1}e}"
            if torch.tensor(float(text)).to(torch.bfloat16).item() == value:
                return float(text)
    return value


def _encode_element(value, dtype: torch.dtype):
    if dtype.is_floating_point:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return _shortest(value, dtype)
    return value


def encode(value):
    """Return the JSON document (as Python objects) the protocol gives ``value``."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().flatten().tolist()
        return {
            "type": "tensor",
            "data_type": DTYPE_NAMES[value.dtype],
            "shape": list(value.shape),
            "value": [_encode_element(v, value.dtype) for v in flat],
        }
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"type": "generic_dict", "value": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, bool):
        return {"type": "scalar", "data_type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "scalar", "data_type": "int64", "value": value}
    if isinstance(value, float):
        return {"type": "scalar", "data_type": "float64", "value": _encode_element(value, torch.float64)}
    if value is None:
        return {"type": "none", "value": None}
    raise TypeError(type(value))
