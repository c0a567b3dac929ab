"""The Falcon WSGI application: routes, parameters and body handling."""

from __future__ import annotations

import math
import os
from pathlib import Path

import falcon
import torch

from torch_serving._native import Admission, PhaseTimes, Pipeline
from torch_serving.backend import Backend
from torch_serving.config import Config
from torch_serving.environ import arrival_time, deferred_call, event_loop_model
from torch_serving.errors import RequestError, install_error_handlers
from torch_serving.event_loop_queue import EventLoopQueue
from torch_serving.metrics import Metrics, MetricsMiddleware, MetricsResource
from torch_serving.model_root import IdentifierError, resolve_model
from torch_serving.preload import Preload
from torch_serving.repository import Repository
from torch_serving.request_body import read_body
from torch_serving.runner import NativeRunner
from torch_serving.shared import SHARED_DIR
from torch_serving.v1 import add_v1_routes
from torch_serving.v2 import add_v2_routes

__all__ = ["ServingApp", "create_app"]

_HEALTHY = b'{"code":200,"message":"OK","description":"OK"}'


class HealthcheckResource:
    """``GET /healthcheck``: answer that the worker is up."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = _HEALTHY

    # HEAD answers as GET does; Falcon sends the headers without the body.
    on_head = on_get


class CacheResource:
    """``GET /cache``: this worker's cached models and cache counters.

    Args:
        pipeline: the native pipeline holding this worker's model cache.
        preload: this worker's warm start, reported under ``preload``.
    """

    def __init__(self, pipeline: Pipeline, preload: Preload) -> None:
        self._pipeline = pipeline
        self._preload = preload

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        models = self._pipeline.cached_paths()
        resp.media = {
            "code": 200,
            "message": "OK",
            "description": "OK",
            "pid": os.getpid(),
            "models": models,
            "stats": self._pipeline.stats(),
            "preload": self._preload.report(),
        }

    on_head = on_get


class ServeResource:
    """``POST /serve``: run a model on the typed JSON body.

    Args:
        pipeline: the native pipeline holding this worker's model cache.
        config: the server settings.
    """

    def __init__(self, pipeline: Pipeline, runner: NativeRunner, config: Config) -> None:
        self._pipeline = pipeline
        self._runner = runner
        self._root = config.model_root
        self._max_body_size = config.max_body_size
        self._measured = config.metrics

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        arrived = arrival_time(req.env)
        context = req.context
        times = PhaseTimes() if self._measured else None
        context.arrived, context.endpoint, context.model, context.times = arrived, "serve", "", times
        _check_parameters(req)
        identifier = _identifier(req)
        invalidation_prob = _probability(req)
        # A request the event loop answers comes with the file its check found (Admission.event_loop_route).
        checked = event_loop_model(req.env)
        path = checked or resolve_model(self._root, identifier)
        context.model = path
        resp.content_type = falcon.MEDIA_JSON
        deferred = deferred_call(req.env)
        if deferred is not None:  # queued from the event loop with its body, and run since
            resp.data = self._runner.deferred_answer(arrived, deferred, context.times)
            return
        body = read_body(
            req, self._max_body_size, self._runner.deadline(arrived), lambda: self._pipeline.metadata(path, identifier)
        )
        resp.data = self._runner.run_measured(
            arrived,
            context.times,
            checked is not None,
            self._pipeline.serve,
            path,
            identifier,
            body,
            invalidation_prob,
        )


_PARAMETERS = ("servable_identifier", "invalidation_prob")


def _check_parameters(req: falcon.Request) -> None:
    """Refuse a query parameter /serve does not know, as the body's unknown keys are: a misspelt
    ``invalidation_prob`` would otherwise be ignored without a word."""
    for name in req.params:
        if name not in _PARAMETERS:
            raise RequestError(
                400,
                "Invalid parameter",
                f"unknown query parameter {name!r}; /serve takes {' and '.join(_PARAMETERS)}",
            )


def _identifier(req: falcon.Request) -> str:
    value = req.params.get("servable_identifier")
    if value is None:
        raise IdentifierError("missing query parameter servable_identifier")
    if isinstance(value, list):
        raise IdentifierError("query parameter servable_identifier is repeated; give it once")
    return value


def _probability(req: falcon.Request) -> float:
    name = "invalidation_prob"
    value = req.params.get(name)
    if value is None:
        return 0.0
    if isinstance(value, list):
        raise RequestError(
            400,
            "Invalid parameter",
            f"query parameter {name} is repeated; give it once",
        )
    try:
        probability = float(value)
    except ValueError:
        probability = math.nan
    if not 0.0 <= probability <= 1.0:
        raise RequestError(
            400,
            "Invalid parameter",
            f"{name} must be a number in [0, 1], got {value!r}",
        )
    return probability


class ServingApp(falcon.App):
    """Falcon's application, with what ``ServingWorker`` reads of it, under the CLI or any gunicorn.

    Attributes:
        admission: the requests this worker holds, which the worker enters for each one it takes, and
            which of them its event loop answers itself.
        preload: the worker's warm start; the worker takes no request before it is done.
        grpc_service: the gRPC server sharing this worker's models, which the worker starts once
            its preload is done and stops as it stops; None without ``--grpc-port``.
        runner: what the native calls go through, within their deadlines.
        event_loop_queue: the /serve and V2 inference requests for loaded models that a host's event
            loop queues itself, without a thread each, and answers once their forward has run.
    """

    __slots__ = ("admission", "event_loop_queue", "grpc_service", "preload", "runner")

    def admitted_by_host(self) -> None:
        """Told by a host that enters ``admission`` for every request before the application sees it
        (``ServingWorker``, which refuses a request beyond the limit before reading it): the native calls
        stop entering it themselves."""
        self.runner.admits_calls = False


def create_app(config: Config) -> ServingApp:
    """Build the WSGI application for one worker process.

    Creates the worker's model cache, so call it after the fork. Models that
    ``config.preload`` names load in the background; ``/v2/health/ready``
    answers 200 once they have.

    Args:
        config: the server settings.

    Returns:
        The Falcon application, with its started preload.
    """
    torch.set_num_threads(config.torch_threads)
    pipeline = Pipeline(
        str(config.model_root),
        config.model_capacity,
        config.buffer_size,
        config.device,
        config.max_model_size,
        config.max_image_pixels,
        config.model_instances(batching=False),
        config.model_instances(batching=True),
    )
    metrics = Metrics(pipeline) if config.metrics else None
    middleware = [MetricsMiddleware(metrics)] if metrics else []
    app = ServingApp(media_type=falcon.MEDIA_JSON, middleware=middleware)
    app.req_options.keep_blank_qs_values = True
    app.add_route("/healthcheck", HealthcheckResource())
    # One count of the requests a worker holds: ServingWorker enters it for each request
    # (admitted_by_host); under another worker, which takes every request, each native call does.
    admission = Admission(pipeline, config.request_limit)
    runner = NativeRunner(admission, config.timeout)
    app.add_route("/serve", ServeResource(pipeline, runner, config))
    preload = Preload(pipeline, config.model_root, config.preload)
    app.add_route("/cache", CacheResource(pipeline, preload))
    if metrics:
        app.add_route("/metrics", MetricsResource(metrics))
    shared = os.environ.get(SHARED_DIR)
    repository = Repository(pipeline, config.model_root, Path(shared) if shared else None)
    backend = Backend(pipeline, admission, runner, config, preload, repository, metrics)
    add_v2_routes(app, backend)
    add_v1_routes(app, backend)
    install_error_handlers(app)
    preload.start()
    repository.start()
    if metrics:
        metrics.start()
    app.admission = admission
    app.runner = runner
    app.event_loop_queue = EventLoopQueue(pipeline, runner, config.max_body_size)
    app.preload = preload
    app.grpc_service = None
    if config.grpc_port:
        # Imported only here: gRPC's runtime stays out of servers that do not serve it.
        from torch_serving.grpc_service import GrpcService

        app.grpc_service = GrpcService(backend)
    return app
