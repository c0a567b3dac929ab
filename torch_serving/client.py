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
from typing import Any, Self

import numpy as np
import requests
import torch

__all__ = ["Client", "ServingError"]

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
# V2 datatypes of numpy dtypes.
_V2_TYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}
_NUMPY_TYPES = {name: dtype for dtype, name in _V2_TYPES.items()}
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


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
        the server decodes to uint8 ``[C, H, W]`` tensors.

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
            inputs: arrays (numpy or torch) by input name.
            binary: send and receive tensors as binary data rather than JSON.

        Returns:
            The outputs as numpy arrays, by name.

        Raises:
            ServingError: the server answered with an error.
        """
        arrays = {name: _as_array(value) for name, value in inputs.items()}
        described, chunks = [], []
        for name, array in arrays.items():
            entry = {"name": name, "datatype": _v2_type(array), "shape": list(array.shape)}
            if binary:
                data = np.ascontiguousarray(array).tobytes()
                entry["parameters"] = {"binary_data_size": len(data)}
                chunks.append(data)
            else:
                entry["data"] = array.flatten().tolist()
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
            dtype = _NUMPY_TYPES.get(output["datatype"])
            size = output.get("parameters", {}).get("binary_data_size")
            if size is None:
                outputs[output["name"]] = np.array(output["data"], dtype=dtype).reshape(output["shape"])
                continue
            raw = response.content[offset : offset + size]
            offset += size
            outputs[output["name"]] = np.frombuffer(raw, dtype=dtype).reshape(output["shape"]).copy()
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
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _v2_type(array: np.ndarray) -> str:
    try:
        return _V2_TYPES[array.dtype]
    except KeyError:
        raise TypeError(f"V2 cannot send arrays of dtype {array.dtype}") from None


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


def _encode_image(value: Any) -> dict[str, Any]:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    else:
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")  # lossless: the server decodes the very pixels
        data = buffer.getvalue()
    return {"type": "image", "value": base64.b64encode(data).decode("ascii")}


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray) or _is_image(value) or isinstance(value, bytes | bytearray)


def _encode_tensor_like(value: Any) -> dict[str, Any]:
    if isinstance(value, np.ndarray):
        return _encode_tensor(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value)
    return _encode_image(value)


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
        return float(v) if isinstance(v, str) else v
    if kind == "string":
        return value["value"]
    if kind == "none":
        return None
    raise ServingError(200, "Unexpected answer", f"the result holds a value of type {kind!r}")
