"""A Python client for torch-serving: call models with torch tensors, numpy arrays, Python
values and images, and get torch tensors and Python values back.

    from torch_serving.client import Client

    with Client("http://localhost:8888") as client:
        answer = client.serve("model-example.pt", [x, y], y, {"x": x, "y": y}, 30, "Hello!")
        outputs = client.infer("scale", {"x": numpy_array})  # V2, binary tensors
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import requests
import torch

from torch_serving.binary_tensors import (
    NUMPY_TYPES,
    V2_TYPES,
    as_bytes,
    bfloat16,
    from_binary,
    object_array,
    to_binary,
)

__all__ = ["Client", "Image", "ServingError"]

# torch dtypes by the protocol's data_type names, and back.
_DTYPES = {
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
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
# Python types of the protocol's scalar data_types.
_SCALAR_TYPES = {"bool": bool, "int64": int, "float64": float}


@dataclass(frozen=True)
class Image:
    """An image to send to ``/serve`` with how the server should decode it.

    Attributes:
        value: a PIL image, or the bytes of a JPEG, PNG or WebP file.
        data_type: ``uint8`` (0 to 255) or ``float32`` (scaled to [0, 1]).
        mode: ``RGB``, ``GRAY``, ``RGBA`` or ``UNCHANGED``; the server's default (``RGB``) when None.
    """

    value: Any
    data_type: str = "uint8"
    mode: str | None = None


class ServingError(Exception):
    """The server refused or failed a call.

    Attributes:
        code: the HTTP status.
        description: the short description (``Model not found``).
        detail: what exactly went wrong, as the server said it.
    """

    def __init__(self, code: int, description: str, detail: str) -> None:
        super().__init__(f"{code} {description}: {detail}")
        self.code = code
        self.description = description
        self.detail = detail


class Client:
    """Calls one torch-serving server, reusing its connections.

    Args:
        url: the server's base URL, e.g. ``http://localhost:8888``.
        timeout: seconds a call may take.
    """

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def healthcheck(self) -> bool:
        """Whether the server answers its health check."""
        try:
            return self._session.get(self._url + "/healthcheck", timeout=self._timeout).status_code == 200
        except requests.RequestException:
            return False

    def serve(self, identifier: str, *args: Any, invalidation_prob: float | None = None) -> Any:
        """Run the model file ``identifier`` on ``args`` through ``/serve``.

        Arguments may be torch tensors, numpy arrays, ints, floats, bools,
        strings, ``None``, lists and tuples of these, dicts of tensors, and
        images (PIL images, or the bytes of a JPEG, PNG or WebP file), which
        the server decodes to uint8 ``[C, H, W]`` tensors; wrap one in
        ``Image`` to have it decoded as float32 or in another mode.

        Returns:
            The model's result: tensors as torch tensors, dicts as dicts,
            lists and tuples as lists.

        Raises:
            ServingError: the server answered with an error.
        """
        params = {"servable_identifier": identifier}
        if invalidation_prob is not None:
            params["invalidation_prob"] = str(invalidation_prob)
        body = json.dumps([_encode(arg) for arg in args]).encode()
        response = self._session.post(self._url + "/serve", params=params, data=body, timeout=self._timeout)
        document = _document(response)
        if response.status_code != 200:
            raise ServingError(document.get("code", response.status_code), document["description"], document["detail"])
        return _decode(document["result"])

    def infer(self, model: str, inputs: Mapping[str, Any], binary: bool = True) -> dict[str, np.ndarray]:
        """Run ``model`` through the Open Inference Protocol (V2).

        Args:
            model: the V2 model name.
            inputs: arrays (numpy or torch) by input name: BF16 as torch bfloat16 tensors or
                ``ml_dtypes.bfloat16`` arrays, BYTES as arrays of ``str`` or ``bytes`` (dtype object).
            binary: send and receive tensors as binary data rather than JSON.

        Returns:
            The outputs as numpy arrays, by name: BYTES as object arrays of ``bytes``, BF16 as
            ``ml_dtypes.bfloat16`` arrays.

        Raises:
            ServingError: the server answered with an error.
        """
        arrays = {name: _as_array(value) for name, value in inputs.items()}
        described, chunks = [], []
        for name, array in arrays.items():
            datatype = _v2_type(array)
            entry = {"name": name, "datatype": datatype, "shape": list(array.shape)}
            if binary:
                data = to_binary(array, datatype)
                entry["parameters"] = {"binary_data_size": len(data)}
                chunks.append(data)
            else:
                entry["data"] = _json_data(array, datatype)
            described.append(entry)
        header = json.dumps({"inputs": described, "parameters": {"binary_data_output": binary}}).encode()
        headers = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
        response = self._session.post(
            f"{self._url}/v2/models/{model}/infer",
            data=header + b"".join(chunks),
            headers=headers,
            timeout=self._timeout,
        )
        json_length = int(response.headers.get("Inference-Header-Content-Length", len(response.content)))
        document = _document(response, response.content[:json_length])
        if response.status_code != 200:
            raise ServingError(response.status_code, response.reason, document.get("error", ""))
        outputs, offset = {}, json_length
        for output in document["outputs"]:
            size = output.get("parameters", {}).get("binary_data_size")
            if size is None:
                outputs[output["name"]] = _from_json(output["data"], output["datatype"]).reshape(output["shape"])
                continue
            raw = response.content[offset : offset + size]
            offset += size
            outputs[output["name"]] = from_binary(raw, output["datatype"]).reshape(output["shape"])
        return outputs

    def metadata(self, model: str) -> dict[str, Any]:
        """Return the V2 metadata of ``model``: its inputs and outputs with datatypes and shapes."""
        response = self._session.get(f"{self._url}/v2/models/{model}", timeout=self._timeout)
        document = _document(response)
        if response.status_code != 200:
            raise ServingError(response.status_code, response.reason, document.get("error", ""))
        return document


def _document(response: requests.Response, content: bytes | None = None) -> dict[str, Any]:
    try:
        return json.loads(response.content if content is None else content)
    except ValueError:
        raise ServingError(response.status_code, response.reason, response.text[:200]) from None


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16 of its own
            return tensor.view(torch.int16).numpy().view(bfloat16())
        return tensor.numpy()
    return np.asarray(value)


def _v2_type(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "BYTES"
    if array.dtype.name == "bfloat16":
        return "BF16"
    try:
        return V2_TYPES[array.dtype]
    except KeyError:
        raise TypeError(f"V2 cannot send arrays of dtype {array.dtype}") from None


def _json_data(array: np.ndarray, datatype: str) -> list[Any]:
    """V2's JSON data of ``array``: BYTES elements as UTF-8 text, BF16 as numbers."""
    if datatype == "BYTES":
        return [as_bytes(item).decode() for item in array.flatten().tolist()]
    if datatype == "BF16":
        return array.astype(np.float32).flatten().tolist()
    return array.flatten().tolist()


def _from_json(data: list[Any], datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return object_array([item.encode() for item in data])
    if datatype == "BF16":
        return np.array(data, dtype=np.float32).astype(bfloat16())
    return np.array(data, dtype=NUMPY_TYPES[datatype])


def _values(tensor: torch.Tensor) -> list[Any]:
    flat = tensor.detach().cpu().flatten()
    if not flat.is_floating_point():
        return flat.tolist()
    return [("NaN" if math.isnan(v) else _NON_FINITE.get(v, v)) for v in flat.double().tolist()]


def _encode_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    if tensor.dtype not in _NAMES:
        raise TypeError(f"the protocol cannot send tensors of dtype {tensor.dtype}")
    return {"type": "tensor", "shape": list(tensor.shape), "data_type": _NAMES[tensor.dtype], "value": _values(tensor)}


def _is_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def _encode_image(image: Image) -> dict[str, Any]:
    if isinstance(image.value, bytes | bytearray):
        data = bytes(image.value)
    else:
        buffer = io.BytesIO()
        image.value.save(buffer, format="PNG")  # lossless: the server decodes the very pixels
        data = buffer.getvalue()
    encoded = {"type": "image", "data_type": image.data_type, "value": base64.b64encode(data).decode("ascii")}
    if image.mode is not None:
        encoded["mode"] = image.mode
    return encoded


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray | Image | bytes | bytearray) or _is_image(value)


def _encode_tensor_like(value: Any) -> dict[str, Any]:
    if isinstance(value, np.ndarray):
        return _encode_tensor(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value)
    return _encode_image(value if isinstance(value, Image) else Image(value))


def _encode(value: Any) -> Any:
    if _is_tensor(value):
        return _encode_tensor_like(value)
    if value is None:
        return {"type": "none"}
    if isinstance(value, bool):
        return {"type": "scalar", "data_type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "scalar", "value": value}
    if isinstance(value, float):
        return {"type": "scalar", "data_type": "float64", "value": _values(torch.tensor([value]))[0]}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) and _is_tensor(item) for key, item in value.items()):
            raise TypeError("dicts must map strings to tensors, arrays or images")
        return {"type": "tensor_dict", "value": {key: _encode_tensor_like(item) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        if value and all(_is_tensor(item) for item in value):
            return {"type": "tensor_list", "value": [_encode_tensor_like(item) for item in value]}
        return {"type": "list", "value": [_encode(item) for item in value]}
    raise TypeError(f"the protocol cannot send a {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    kind = value["type"]
    if kind == "tensor":
        dtype = _DTYPES[value["data_type"]]
        flat = [float(v) if isinstance(v, str) else v for v in value["value"]]  # "NaN", "Infinity"
        return torch.tensor(flat, dtype=dtype).reshape(value["shape"])
    if kind == "generic_dict":
        return {key: _decode(item) for key, item in value["value"].items()}
    if kind == "scalar":
        v = value["value"]
        return float(v) if isinstance(v, str) else _SCALAR_TYPES.get(value.get("data_type"), type(v))(v)
    if kind == "string":
        return value["value"]
    if kind == "none":
        return None
    raise ServingError(200, "Unexpected answer", f"the result holds a value of type {kind!r}")
