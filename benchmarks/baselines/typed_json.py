"""The /serve protocol's typed JSON in plain Python, as a user would write it, for the baselines
(the naive server, TorchServe's handler, LitServe's API): one argument decoded, one result
encoded, and the example's arguments merged into a batch and its result split back.

Imported as ``typed_json`` beside TorchServe's handler in its model archive.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image
from torch.utils._pytree import tree_leaves, tree_map

_DTYPES = {
    "bool": np.bool_,
    "uint8": np.uint8,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
}
_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.float16: "float16",
}


def _tensor(obj: dict) -> torch.Tensor:
    array = np.asarray(obj["value"], dtype=_DTYPES[obj.get("data_type", "float32")])
    if "shape" in obj:
        array = array.reshape(obj["shape"])
    return torch.from_numpy(array)


_IMAGE_MODES = {"RGB": "RGB", "GRAY": "L", "RGBA": "RGBA"}


def _image(obj: dict) -> torch.Tensor:
    image = Image.open(io.BytesIO(base64.b64decode(obj["value"]))).convert(_IMAGE_MODES[obj.get("mode", "RGB")])
    array = np.asarray(image)
    pixels = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1)
    return pixels.float().div_(255) if obj.get("data_type") == "float32" else pixels


def decode_argument(obj: dict):
    kind = obj["type"]
    if kind == "tensor":
        return _tensor(obj)
    if kind == "image":
        return _image(obj)
    if kind == "tensor_list":
        return [_tensor(t) for t in obj["value"]]
    if kind == "tensor_dict":
        return {k: _tensor(t) for k, t in obj["value"].items()}
    if kind == "list":
        return [decode_argument(v) for v in obj["value"]]
    if kind == "none":
        return None
    return obj["value"]


def encode_value(value):
    if isinstance(value, torch.Tensor):
        return {
            "type": "tensor",
            "data_type": _NAMES[value.dtype],
            "shape": list(value.shape),
            "value": value.flatten().tolist(),
        }
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {"type": "generic_dict", "value": {str(k): encode_value(v) for k, v in value.items()}}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, bool):
        return {"type": "scalar", "data_type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "scalar", "data_type": "int64", "value": value}
    if isinstance(value, float):
        return {"type": "scalar", "data_type": "float64", "value": value}
    return {"type": "none", "value": None}


def merge_rows(requests: list[list]) -> tuple[list, list[int]]:
    """Merge the positional arguments of several requests along dimension 0 of every tensor (in lists
    and dicts too; other values are the first request's); return them and each request's rows."""
    merged = tree_map(
        lambda *values: torch.cat(values) if isinstance(values[0], torch.Tensor) else values[0], *requests
    )
    rows = [next(leaf.shape[0] for leaf in tree_leaves(args) if isinstance(leaf, torch.Tensor)) for args in requests]
    return merged, rows


def split_rows(result, rows: list[int]) -> list:
    """Split a merged forward's result into each request's rows (other values are shared)."""
    return [
        tree_map(lambda value, i=i: value.split(rows)[i] if isinstance(value, torch.Tensor) else value, result)
        for i in range(len(rows))
    ]
