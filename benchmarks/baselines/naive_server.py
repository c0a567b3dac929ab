"""The naive way to serve the /serve protocol, for the load benchmark.

Falcon + orjson + numpy + torch.jit.load (and base64 + Pillow for images),
all in Python: what a user would write in an afternoon. It handles the protocol's common cases (no error
envelope subtleties), so its answers can be checked like ours.

Run: TORCH_SERVING_MODEL_ROOT=... gunicorn benchmarks.baselines.naive_server:app
"""

from __future__ import annotations

import base64
import io
import os
import threading
import warnings

import falcon
import numpy as np
import orjson
import torch
from PIL import Image

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


def _argument(obj: dict):
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
        return [_argument(v) for v in obj["value"]]
    if kind == "none":
        return None
    return obj["value"]


def _encode(value):
    if isinstance(value, torch.Tensor):
        return {
            "type": "tensor",
            "data_type": _NAMES[value.dtype],
            "shape": list(value.shape),
            "value": value.flatten().tolist(),
        }
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"type": "generic_dict", "value": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, bool):
        return {"type": "scalar", "data_type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "scalar", "data_type": "int64", "value": value}
    if isinstance(value, float):
        return {"type": "scalar", "data_type": "float64", "value": value}
    return {"type": "none", "value": None}


class NaiveServe:
    """POST /serve the naive way: a dict of loaded models behind a lock."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._models: dict[str, torch.jit.ScriptModule] = {}
        self._lock = threading.Lock()

    def _model(self, identifier: str):
        with self._lock:
            if identifier not in self._models:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._models[identifier] = torch.jit.load(os.path.join(self._root, identifier)).eval()
            return self._models[identifier]

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        model = self._model(req.get_param("servable_identifier", required=True))
        doc = orjson.loads(req.bounded_stream.read())
        args = [_argument(a) for a in (doc if isinstance(doc, list) else [doc])]
        with torch.inference_mode():
            result = model(*args)
        resp.data = orjson.dumps({"code": 200, "message": "OK", "description": "Success", "result": _encode(result)})
        resp.content_type = falcon.MEDIA_JSON


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = b'{"code":200,"message":"OK","description":"OK"}'


def create_app() -> falcon.App:
    torch.set_num_threads(int(os.environ.get("TORCH_SERVING_TORCH_THREADS", "1")))
    app = falcon.App()
    app.add_route("/serve", NaiveServe(os.environ.get("TORCH_SERVING_MODEL_ROOT", ".")))
    app.add_route("/healthcheck", Health())
    return app


app = create_app()
