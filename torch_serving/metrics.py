"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Under the CLI, every gunicorn worker writes its values into files of one
directory (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``,
which the CLI makes fresh at start; a worker that exits is marked dead), and
whichever worker answers a scrape sums them all, so counters are exact over
workers. Without that variable (the app under another host), a worker
reports its own values.

Per request (``/serve`` and V2 ``infer``) the request's middleware records
its status, body size and the time of each phase. The cache's counters and
the models' forward executions live in the native core; a sampler thread
copies their increase into the metrics every second, and at each scrape.
docs/metrics.md lists every metric beside its Triton and TorchServe
counterpart.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import falcon
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from torch_serving._native import PhaseTimes, Server
from torch_serving.cli import MULTIPROCESS_DIR

__all__ = ["Metrics", "MetricsMiddleware", "MetricsResource"]

VERSION = "1"
# Seconds: from a tenth of a millisecond (a small model inline) to a minute (the default deadline).
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
_PHASES = ("queue", "decode", "forward", "encode")
_SAMPLE_INTERVAL_S = 1.0


class Metrics:
    """This worker's metrics, and the sampler that copies the native counters into them.

    Args:
        server: the native pipeline whose cache and models are sampled.
    """

    def __init__(self, server: Server) -> None:
        self._server = server
        self._multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        # One registry per app: no module-level state. Under multiprocess mode
        # the values go to files and a scrape reads those instead.
        self._registry = CollectorRegistry()
        registry = None if self._multiprocess else self._registry
        model = ("model", "version")
        self.requests = Counter(
            "torch_serving_requests", "Inference requests by endpoint and HTTP status.",
            ("model", "endpoint", "status"), registry=registry,
        )  # fmt: skip
        self.success = Counter(
            "nv_inference_request_success", "Inference requests answered 200.", model, registry=registry
        )
        self.failure = Counter(
            "nv_inference_request_failure", "Inference requests answered with an error, by HTTP status.",
            (*model, "status"), registry=registry,
        )  # fmt: skip
        self.count = Counter(
            "nv_inference_count", "Inferences performed (requests that ran).", model, registry=registry
        )
        self.executions = Counter(
            "nv_inference_exec_count", "Model executions: fewer than inferences when requests are batched.",
            model, registry=registry,
        )  # fmt: skip
        self.body_bytes = Counter(
            "torch_serving_request_body_bytes", "Request body bytes received.", ("model",), registry=registry
        )
        self.seconds = {
            phase: Histogram(
                f"torch_serving_{phase}_seconds",
                f"Time spent in the {phase} phase of a request.",
                ("model",),
                buckets=_BUCKETS,
                registry=registry,
            )  # fmt: skip
            for phase in (*_PHASES, "request")
        }
        self.cache_models = Gauge(
            "torch_serving_cache_models", "Models held in the workers' caches.", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.cache_counters = {
            name: Counter(f"torch_serving_cache_{name}", text, registry=registry)
            for name, text in (
                ("loads", "Model loads started: misses, changed files and reloads."),
                ("failed_loads", "Model loads that failed."),
                ("evictions", "Models dropped from a cache to make room."),
            )
        }
        self._sampled: dict[str, int] = {}
        self._sample_lock = threading.Lock()
        self._children: dict[tuple, Any] = {}

    def start(self) -> None:
        """Start the sampler thread of this worker."""
        threading.Thread(target=self._sample_forever, name="metrics", daemon=True).start()

    def observe(
        self, model: str, endpoint: str, status: str, times: PhaseTimes | None, total: float, size: int
    ) -> None:
        """Record one inference request."""
        self._child(self.requests, model, endpoint, status).inc()
        if status == "200":
            self._child(self.success, model, VERSION).inc()
        else:
            self._child(self.failure, model, VERSION, status).inc()
        if size:
            self._child(self.body_bytes, model).inc(size)
        self._child(self.seconds["request"], model).observe(total)
        if times is not None and times.forward:
            self._child(self.count, model, VERSION).inc()
            for phase in _PHASES:
                self._child(self.seconds[phase], model).observe(getattr(times, phase))

    def exposition(self) -> bytes:
        """The metrics of every worker (of this one alone outside multiprocess mode), as text."""
        self.sample()
        if not self._multiprocess:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)

    def sample(self) -> None:
        """Copy the increase of the native counters since the last sample into the metrics."""
        stats = self._server.stats()
        with self._sample_lock:
            for name, counter in self.cache_counters.items():
                counter.inc(self._increase(name, stats[name]))
            for path, counters in stats["models"].items():
                increase = self._increase("executions:" + path, counters["executions"])
                if increase:
                    self._child(self.executions, path, VERSION).inc(increase)
            self.cache_models.set(len(stats["models"]))

    def _increase(self, key: str, value: int) -> int:
        previous = self._sampled.get(key, 0)
        self._sampled[key] = value
        # A model loaded again starts counting from 0.
        return value - previous if value >= previous else value

    def _child(self, metric, *labels: str):
        # .labels() hashes and checks the labels on every call; a request cannot afford that.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def _sample_forever(self) -> None:
        while True:
            time.sleep(_SAMPLE_INTERVAL_S)
            self.sample()


class MetricsMiddleware:
    """Records every inference request, which its resource marks by setting ``req.context``'s
    ``model`` (empty until the model is known), ``endpoint``, ``arrived`` and ``times``."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool) -> None:
        context = req.context
        model = context.get("model")
        if model is None:
            return
        total = time.monotonic() - context.arrived
        self._metrics.observe(
            model, context.get("endpoint"), str(resp.status_code), context.get("times"), total, req.content_length or 0
        )


class MetricsResource:
    """``GET /metrics``: Prometheus' text exposition."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.exposition()
