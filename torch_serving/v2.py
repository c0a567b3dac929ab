"""The Open Inference Protocol (KServe V2) endpoints, with binary tensor data.

Model names are paths under the model root; ``name`` finds ``name`` or, failing
that, ``name.pt`` and then ``name.pt2``. Each model file has the single version
``"1"``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import falcon

from torch_serving import __version__
from torch_serving._native import ModelNotFoundError, PhaseTimes, RequestBody
from torch_serving.backend import Backend
from torch_serving.environ import arrival_time, deferred_call, event_loop_model, on_event_loop
from torch_serving.errors import RequestError
from torch_serving.model_root import MODEL_SUFFIXES, resolve_model
from torch_serving.preload import Preload
from torch_serving.repository import Repository
from torch_serving.request_body import read_body
from torch_serving.shared import MODEL_VERSION

__all__ = ["add_v2_routes", "binary_request", "json_part_length", "model_statistics", "resolve_name", "server_metadata"]

HEADER_LENGTH = "Inference-Header-Content-Length"
# `name` may hold slashes (tritonclient leaves them unquoted, and the server
# decodes %2F), so the path is parsed from its end.
_MODEL_PATH = re.compile(
    r"^/v2/models/(?P<name>.+?)(?:/versions/(?P<version>[^/]*))?(?P<action>/ready|/infer|/config|/stats)?$"
)
_REPOSITORY_PATH = re.compile(r"^/v2/repository/(?:index|models/(?P<name>.+)/(?P<action>load|unload))$")
_LABEL = "model name"
_MAX_REPOSITORY_BODY = 64 * 1024


def _json(resp: falcon.Response, document: dict) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(document).encode()


def server_metadata() -> dict:
    """The server's name, version and protocol extensions, over REST and gRPC."""
    return {"name": "torch-serving", "version": __version__, "extensions": ["binary_tensor_data"]}


class ServerMetadataResource:
    """``GET /v2``: the server's metadata."""

    def __init__(self) -> None:
        self._document = server_metadata()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, self._document)

    # HEAD answers as GET does; Falcon sends the headers without the body.
    on_head = on_get


class HealthProbeResource:
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
    """Everything under ``/v2/models/``: metadata, readiness, configuration and inference."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._pipeline = backend.pipeline
        self._runner = backend.runner
        self._root = backend.config.model_root
        self._max_body_size = backend.config.max_body_size
        self._measured = backend.config.metrics

    def __call__(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        name: str,
        version: str | None,
        action: str | None,
    ) -> None:
        arrived = arrival_time(req.env)
        allowed = ("POST",) if action == "/infer" else ("GET", "HEAD")
        if req.method not in allowed:
            raise falcon.HTTPMethodNotAllowed(
                list(allowed), description=f"{req.path} answers {' and '.join(allowed)} only"
            )
        if action == "/stats" or (name == "stats" and version is None and action is None):
            # `/v2/models/stats` is every model's, as in Triton (a model named `stats` is shadowed).
            path = None if action is None else resolve_name(self._root, name, version)
            _json(resp, {"model_stats": model_statistics(self._backend, path)})
            return
        if action == "/infer":
            # Marks an inference request for metrics, also when the model is not found.
            context = req.context
            times = PhaseTimes() if self._measured else None
            context.arrived, context.endpoint, context.model, context.times = arrived, "infer", "", times
        # A request the event loop answers comes with the file its check found (Admission.event_loop_route).
        path = event_loop_model(req.env) or resolve_name(self._root, name, version)
        if action == "/infer":
            context.model = path
            self._infer(req, resp, arrived, name, path)
            return
        if action == "/config":
            resp.content_type = falcon.MEDIA_JSON
            resp.data = self._runner.run(arrived, self._pipeline.config, path, name)
            return
        metadata = self._runner.run(arrived, self._pipeline.metadata, path, name)
        if action == "/ready":
            _json(resp, {"name": name, "ready": True})
        else:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = metadata

    def _infer(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        arrived: float,
        name: str,
        path: str,
    ) -> None:
        header_length = json_part_length(req.get_header(HEADER_LENGTH), self._max_body_size)
        deferred = deferred_call(req.env)
        if deferred is not None:  # queued from the event loop with its body, and run since
            response = self._runner.deferred_answer(arrived, deferred, req.context.times)
            json_length = deferred.json_length
        else:
            body = read_body(
                req, self._max_body_size, self._runner.deadline(arrived), lambda: self._pipeline.metadata(path, name)
            )
            response, json_length = self._runner.run_measured(
                arrived, req.context.times, on_event_loop(req.env), self._pipeline.infer, path, name, body, header_length
            )
        if json_length < len(response):
            resp.set_header(HEADER_LENGTH, str(json_length))
            resp.content_type = "application/octet-stream"
        else:
            resp.content_type = falcon.MEDIA_JSON
        resp.data = response


def model_statistics(backend: Backend, path: str | None) -> list[dict]:
    """Triton's ``model_stats`` for the model file ``path``, or for every model that served or is loaded,
    from the metrics of every worker."""
    if backend.metrics is None:
        raise RequestError(400, "Not available", "statistics come from the metrics, which --metrics off turned off")
    measured = backend.metrics.statistics()
    # Every model that served in any worker or is loaded in this one, as Triton lists the models it
    # has loaded: a walk of the whole tree on each call would cost more than the answer.
    files = sorted(set(measured) | set(backend.repository.cached())) if path is None else [path]
    empty = {"count": 0, "ns": 0}
    stats = []
    for relative in files:
        entry = measured.get(relative) or {
            "last_inference": 0,
            "inference_count": 0,
            "execution_count": 0,
            "inference_stats": {
                phase: empty
                for phase in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
            }
            | {"cache_hit": empty, "cache_miss": empty},
            "batch_stats": [],
        }
        stats.append({"name": backend.repository.name_of(relative), "version": MODEL_VERSION, **entry})
    return stats


class RepositorySink:
    """Triton's model repository extension: ``POST /v2/repository/index`` (an empty body, or
    ``{"ready": true}`` for loaded models only), ``/v2/repository/models/{name}/load`` and ``/unload``.

    Args:
        repository: this worker's side of the repository.
        root: the model root.
    """

    def __init__(self, repository: Repository, root: Path) -> None:
        self._repository = repository
        self._root = root

    def __call__(self, req: falcon.Request, resp: falcon.Response, name: str | None, action: str | None) -> None:
        if req.method != "POST":
            raise falcon.HTTPMethodNotAllowed(["POST"], description=f"{req.path} answers POST only")
        # tritonclient sends an empty body; Triton's parameters (`ready`, a load's config) are optional.
        body = req.bounded_stream.read(_MAX_REPOSITORY_BODY + 1)
        options = _repository_options(body)
        if name is None:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = json.dumps(self._repository.index(ready_only=options.get("ready") is True)).encode()
            return
        path = resolve_name(self._root, name, None)
        if action == "load":
            self._repository.load(path)
        else:
            self._repository.unload(path)
        _json(resp, {})


def _repository_options(body: bytes) -> dict:
    if len(body) > _MAX_REPOSITORY_BODY:
        raise RequestError(
            413, "Request body too large", f"a repository request takes at most {_MAX_REPOSITORY_BODY} bytes"
        )
    if not body.strip():
        return {}
    try:
        options = json.loads(body)
    except ValueError:
        raise RequestError(
            400, "Invalid request body", "a repository request body must be empty or a JSON object"
        ) from None
    if not isinstance(options, dict):
        raise RequestError(400, "Invalid request body", "a repository request body must be empty or a JSON object")
    return options


def binary_request(document: dict, data: list[bytes]) -> tuple[RequestBody, int]:
    """An inference request in the binary form, for the native inference path: ``document`` (whose
    inputs give their data's ``binary_data_size``) as JSON, then ``data``, written once into native
    memory, where it is parsed (bytes would be copied there); and the length of its JSON part."""
    header = json.dumps(document).encode()
    # Spaces after the JSON put the data on an 8-byte boundary, where the native side takes a tensor
    # of any datatype as a view instead of copying it.
    header += b" " * (-len(header) % 8)
    body = RequestBody(len(header) + sum(map(len, data)))
    view, offset = memoryview(body), 0
    for chunk in (header, *data):
        view[offset : offset + len(chunk)] = chunk
        offset += len(chunk)
    return body, len(header)


def resolve_name(root: Path, name: str, version: str | None) -> str:
    """The model file a V2 name (and version) names, relative to ``root``."""
    if version is not None and version != MODEL_VERSION:
        raise ModelNotFoundError(f"model {name} has no version {version!r}; its only version is {MODEL_VERSION!r}")
    try:
        return resolve_model(root, name, _LABEL)
    except ModelNotFoundError:
        if name.endswith(MODEL_SUFFIXES):
            raise
    for suffix in MODEL_SUFFIXES:
        try:
            return resolve_model(root, name + suffix, _LABEL)
        except ModelNotFoundError:
            pass
    raise ModelNotFoundError(f"no model file {name}, {name}.pt or {name}.pt2 under the model root")


def json_part_length(value: str | None, max_body_size: int) -> int:
    """The length of an inference request's JSON part, given its ``Inference-Header-Content-Length``
    header's ``value`` (None: not given); -1 when the whole body is JSON.

    Raises:
        RequestError: 400, the value is not a length within a body this server accepts.
    """
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


def add_v2_routes(app: falcon.App, backend: Backend) -> None:
    """Add the Open Inference Protocol endpoints, with Triton's statistics and repository extensions, to ``app``."""
    app.add_route("/v2", ServerMetadataResource())
    app.add_route("/v2/health/live", HealthProbeResource("live"))
    app.add_route("/v2/health/ready", HealthProbeResource("ready", backend.preload))
    app.add_sink(ModelSink(backend), _MODEL_PATH)
    app.add_sink(RepositorySink(backend.repository, backend.config.model_root), _REPOSITORY_PATH)
