"""The naive way to serve the /serve protocol, for the load benchmark.

Falcon + orjson + numpy + torch.jit.load (and base64 + Pillow for images),
all in Python: what a user would write in an afternoon. It handles the protocol's common cases (no error
envelope subtleties), so its answers can be checked like ours.

Run: TORCH_SERVING_MODEL_ROOT=... gunicorn benchmarks.baselines.naive_server:app
"""

from __future__ import annotations

import os
import threading
import warnings

import falcon
import orjson
import torch

from benchmarks.baselines.typed_json import decode_argument, encode_value


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
        args = [decode_argument(a) for a in (doc if isinstance(doc, list) else [doc])]
        with torch.inference_mode():
            result = model(*args)
        resp.data = orjson.dumps(
            {"code": 200, "message": "OK", "description": "Success", "result": encode_value(result)}
        )
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
