"""The Open Inference Protocol (KServe V2) endpoints, with binary tensor data.

Model names are paths under the model root; ``name`` finds ``name`` or, failing
that, ``name.pt`` and then ``name.pt2``. Each model file has the single version
``"1"``.
"""

from __future__ import annotations

import json
import re

import falcon

from torch_serving import __version__
from torch_serving._native import ModelNotFoundError, PhaseTimes, Server
from torch_serving.admission import NativeRunner
from torch_serving.config import Config
from torch_serving.errors import RequestError
from torch_serving.model_root import resolve_model
from torch_serving.preload import Preload
from torch_serving.request_body import read_body
from torch_serving.worker import arrival_time

__all__ = ["add_v2_routes"]

VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
# `name` may hold slashes (tritonclient leaves them unquoted, and the server
# decodes %2F), so the path is parsed from its end.
_MODEL_PATH = re.compile(
    r"^/v2/models/(?P<name>.+?)(?:/versions/(?P<version>[^/]*))?(?P<action>/ready|/infer|/config)?$"
)
_LABEL = "model name"
# Tried in order after the name itself: TorchScript, then AOTInductor packages.
_SUFFIXES = (".pt", ".pt2")


def _json(resp: falcon.Response, document: dict) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(document).encode()


class ServerMetadataResource:
    """``GET /v2``: the server's name, version and protocol extensions."""

    def __init__(self) -> None:
        self._document = {
            "name": "torch-serving",
            "version": __version__,
            "extensions": ["binary_tensor_data"],
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, self._document)

    # HEAD answers as GET does; Falcon sends the headers without the body.
    on_head = on_get


class HealthResource:
    """``GET /v2/health/live`` and ``/v2/health/ready``: the worker answers, so it is live;
    it is ready once its preload is done (503 ``{"ready": false}`` until then).

    Args:
        field: ``live`` or ``ready``, the key of the answer.
        preload: what must be done first; nothing for liveness.
    """

    def __init__(self, field: str, preload: Preload | None = None) -> None:
        self._field = field
        self._preload = preload

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready = self._preload is None or self._preload.done
        if not ready:
            resp.status = falcon.HTTP_503
        _json(resp, {self._field: ready})

    on_head = on_get


class ModelSink:
    """Everything under ``/v2/models/``: metadata, readiness, configuration and inference.

    Args:
        server: the native pipeline holding this worker's model cache.
        runner: the admission layer native calls go through.
        config: the server settings.
    """

    def __init__(self, server: Server, runner: NativeRunner, config: Config) -> None:
        self._server = server
        self._runner = runner
        self._root = config.model_root
        self._max_body_size = config.max_body_size

    def __call__(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        name: str,
        version: str | None,
        action: str | None,
    ) -> None:
        arrived = arrival_time()
        allowed = ("POST",) if action == "/infer" else ("GET", "HEAD")
        if req.method not in allowed:
            raise falcon.HTTPMethodNotAllowed(
                list(allowed), description=f"{req.path} answers {' and '.join(allowed)} only"
            )
        if action == "/infer":
            # Marks an inference request for metrics, also when the model is not found.
            context = req.context
            context.arrived, context.endpoint, context.model, context.times = arrived, "infer", "", PhaseTimes()
        path = self._resolve(name, version)
        if action == "/infer":
            context.model = path
            self._infer(req, resp, arrived, name, path)
            return
        if action == "/config":
            resp.content_type = falcon.MEDIA_JSON
            resp.data = self._runner.run(arrived, self._server.config, path, name)
            return
        metadata = self._runner.run(arrived, self._server.metadata, path, name)
        if action == "/ready":
            _json(resp, {"name": name, "ready": True})
        else:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = metadata

    def _resolve(self, name: str, version: str | None) -> str:
        if version is not None and version != VERSION:
            raise ModelNotFoundError(f"model {name} has no version {version!r}; its only version is {VERSION!r}")
        try:
            return resolve_model(self._root, name, _LABEL)
        except ModelNotFoundError:
            if name.endswith((".pt", ".pt2")):
                raise
        for suffix in _SUFFIXES:
            try:
                return resolve_model(self._root, name + suffix, _LABEL)
            except ModelNotFoundError:
                pass
        raise ModelNotFoundError(f"no model file {name}, {name}.pt or {name}.pt2 under the model root")

    def _infer(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        arrived: float,
        name: str,
        path: str,
    ) -> None:
        header_length = _header_length(req, self._max_body_size)
        body = read_body(req, self._max_body_size, self._runner.deadline(arrived))
        response, json_length = self._runner.run_measured(
            arrived, req.context.times, self._server.infer, path, name, body, header_length
        )
        if json_length < len(response):
            resp.set_header(HEADER_LENGTH, str(json_length))
            resp.content_type = "application/octet-stream"
        else:
            resp.content_type = falcon.MEDIA_JSON
        resp.data = response


def _header_length(req: falcon.Request, max_body_size: int) -> int:
    value = req.get_header(HEADER_LENGTH)
    if value is None:
        return -1
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise RequestError(
            400,
            "Invalid header",
            f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}",
        )
    length = int(text)
    if length > max_body_size:
        raise RequestError(
            400,
            "Invalid header",
            f"{HEADER_LENGTH} is {text}, past the end of any body this server accepts (at most {max_body_size} bytes)",
        )
    return length


def add_v2_routes(app: falcon.App, server: Server, runner: NativeRunner, config: Config, preload: Preload) -> None:
    """Add the Open Inference Protocol endpoints to ``app``.

    Args:
        app: the application.
        server: the native pipeline holding this worker's model cache.
        runner: the admission layer native calls go through.
        config: the server settings.
        preload: the worker's warm start, which readiness waits for.
    """
    app.add_route("/v2", ServerMetadataResource())
    app.add_route("/v2/health/live", HealthResource("live"))
    app.add_route("/v2/health/ready", HealthResource("ready", preload))
    app.add_sink(ModelSink(server, runner, config), _MODEL_PATH)
