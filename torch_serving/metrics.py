"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Under the CLI, every gunicorn worker writes its values into files of one
directory (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``,
which the CLI makes fresh at start; a worker that exits is marked dead), and
whichever worker answers a scrape sums them all, so counters are exact over
workers. Without that variable (the app under another host), a worker
reports its own values.

Per request (``/serve`` and V2 ``infer``) the request's middleware tallies
its status, body size and the time of each phase; the cache's counters and
the models' forward executions live in the native core. A sampler thread
writes the tally and the native counters' increase into the metrics every
second, at each scrape, and as the worker exits (a worker killed with
SIGKILL loses at most its last second).
docs/metrics.md lists every metric beside its Triton and TorchServe
counterpart.
"""

from __future__ import annotations

import atexit
import bisect
import os
import threading
import time
from typing import Any

import falcon
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from torch_serving._native import PhaseTimes, Pipeline
from torch_serving.shared import MODEL_VERSION, MULTIPROCESS_DIR

__all__ = ["Metrics", "MetricsMiddleware", "MetricsResource"]

# Seconds: from a tenth of a millisecond (a small model inline) to a minute (the default deadline).
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
_PHASES = ("queue", "decode", "forward", "encode")
_SAMPLE_INTERVAL_S = 1.0


class Metrics:
    """This worker's metrics, and the sampler that writes its tally and the native counters into them.

    Args:
        pipeline: the native pipeline whose cache and models are sampled.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        # One registry per app: no module-level state. Under multiprocess mode
        # the values go to files and a scrape reads those instead.
        self._registry = CollectorRegistry()
        registry = None if self._multiprocess else self._registry
        model = ("model", "version")

        def counter(name: str, text: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, text, labels, registry=registry)

        self.requests = counter(
            "torch_serving_requests", "Inference requests by endpoint and HTTP status.", ("model", "endpoint", "status")
        )
        self.success = counter("nv_inference_request_success", "Inference requests answered 200.", model)
        self.failure = counter(
            "nv_inference_request_failure", "Inference requests answered with an error.", (*model, "status")
        )
        self.count = counter("nv_inference_count", "Inferences performed (requests whose model ran).", model)
        self.executions = counter(
            "nv_inference_exec_count", "Model executions: fewer than inferences when requests are batched.", model
        )
        self.body_bytes = counter("torch_serving_request_body_bytes", "Request body bytes received.", ("model",))
        self.failure_seconds = counter(
            "torch_serving_request_failure_seconds", "Seconds spent on requests answered with an error.", ("model",)
        )
        self.last_inference = Gauge(
            "torch_serving_last_inference_timestamp_seconds",
            "When the model last answered an inference request (Unix time).",
            ("model",),
            registry=registry,
            multiprocess_mode="max",
        )
        self.seconds = {
            phase: Histogram(
                f"torch_serving_{phase}_seconds",
                f"Seconds spent in the {phase} phase of a request.",
                ("model",),
                buckets=_BUCKETS,
                registry=registry,
            )
            for phase in (*_PHASES, "request")
        }
        self.cache_models = Gauge(
            "torch_serving_cache_models",
            "Models held in the workers' caches.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cache_counters = {
            name: counter(f"torch_serving_cache_{name}", text, ())
            for name, text in (
                ("loads", "Model loads started: misses, changed files and reloads."),
                ("failed_loads", "Model loads that failed."),
                ("evictions", "Models dropped from a cache to make room."),
            )
        }
        self._tally = _Tally()
        self._tally_lock = threading.Lock()
        self._sampled: dict[str, int] = {}
        self._sample_lock = threading.Lock()
        self._children: dict[tuple, Any] = {}

    def start(self) -> None:
        """Start the sampler thread of this worker, and sample once more as the worker exits, so that a
        worker that stops (SIGHUP, SIGTERM, --max-requests) loses none of its last second's tally."""
        threading.Thread(target=self._sample_forever, name="metrics", daemon=True).start()
        atexit.register(self.sample)

    def observe(
        self, model: str, endpoint: str, status: str, times: PhaseTimes | None, total: float, size: int
    ) -> None:
        """Record one inference request: tallied here, written into the metrics by the next sample.

        Writing a multiprocess metric takes a lock and a write into its file;
        the dozen writes of a request cost a small request a tenth of its
        rate, where a tally costs a few dictionary updates (docs/performance.md).
        """
        ran = times is not None and times.forward > 0
        phases = [("request", total)]
        if ran:
            phases += [("queue", times.queue), ("decode", times.decode), ("forward", times.forward)]
            phases.append(("encode", times.encode))
        with self._tally_lock:
            tally = self._tally
            key = (model, endpoint, status, ran)
            tally.requests[key] = tally.requests.get(key, 0) + 1
            if size:
                tally.body_bytes[model] = tally.body_bytes.get(model, 0) + size
            if status != "200":
                tally.failure_seconds[model] = tally.failure_seconds.get(model, 0.0) + total
            tally.last_inference[model] = time.time()
            for phase, seconds in phases:
                counts = tally.seconds.get((phase, model))
                if counts is None:
                    counts = tally.seconds[(phase, model)] = [0] * (len(_BUCKETS) + 1) + [0.0]
                counts[bisect.bisect_left(_BUCKETS, seconds)] += 1
                counts[-1] += seconds

    def exposition(self) -> bytes:
        """The metrics of every worker (of this one alone outside multiprocess mode), as text."""
        return generate_latest(self._collected())

    def statistics(self) -> dict[str, dict[str, Any]]:
        """Triton's inference statistics of every model that served, by model file, from the metrics."""
        values: dict[str, dict[str, float]] = {}
        for family in self._collected().collect():
            for sample in family.samples:
                model = sample.labels.get("model")
                if model and sample.labels.get("le") is None:
                    per_model = values.setdefault(model, {})
                    per_model[sample.name] = per_model.get(sample.name, 0.0) + sample.value

        def duration(counts: dict[str, float], phase: str) -> dict[str, int]:
            return {
                "count": int(counts.get(f"torch_serving_{phase}_seconds_count", 0)),
                "ns": int(counts.get(f"torch_serving_{phase}_seconds_sum", 0) * 1e9),
            }

        statistics = {}
        for model, counts in values.items():
            failures = int(counts.get("nv_inference_request_failure_total", 0))
            failure_ns = int(counts.get("torch_serving_request_failure_seconds_total", 0) * 1e9)
            request = duration(counts, "request")
            statistics[model] = {
                "last_inference": int(counts.get("torch_serving_last_inference_timestamp_seconds", 0) * 1000),
                "inference_count": int(counts.get("nv_inference_count_total", 0)),
                "execution_count": int(counts.get("nv_inference_exec_count_total", 0)),
                "inference_stats": {
                    "success": {
                        "count": int(counts.get("nv_inference_request_success_total", 0)),
                        "ns": max(request["ns"] - failure_ns, 0),
                    },
                    "fail": {"count": failures, "ns": failure_ns},
                    "queue": duration(counts, "queue"),
                    "compute_input": duration(counts, "decode"),
                    "compute_infer": duration(counts, "forward"),
                    "compute_output": duration(counts, "encode"),
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [],
            }
        return statistics

    def _collected(self) -> CollectorRegistry:
        self.sample()
        if not self._multiprocess:
            return self._registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry

    def sample(self) -> None:
        """Write the tally, and the increase of the native counters since the last sample, into the metrics."""
        with self._tally_lock:
            tally, self._tally = self._tally, _Tally()
        stats = self._pipeline.stats()
        with self._sample_lock:
            for (model, endpoint, status, ran), count in tally.requests.items():
                self._child(self.requests, model, endpoint, status).inc(count)
                if status == "200":
                    self._child(self.success, model, MODEL_VERSION).inc(count)
                else:
                    self._child(self.failure, model, MODEL_VERSION, status).inc(count)
                if ran:
                    self._child(self.count, model, MODEL_VERSION).inc(count)
            for model, size in tally.body_bytes.items():
                self._child(self.body_bytes, model).inc(size)
            for model, seconds in tally.failure_seconds.items():
                self._child(self.failure_seconds, model).inc(seconds)
            for model, when in tally.last_inference.items():
                self._child(self.last_inference, model).set(when)
            for (phase, model), counts in tally.seconds.items():
                histogram = self._child(self.seconds[phase], model)
                # prometheus-client's Histogram keeps one value per bucket
                # (made cumulative when collected) and the sum, which is what
                # observe() adds a sample to; this adds many at once.
                for bucket, count in zip(histogram._buckets, counts[:-1], strict=True):
                    if count:
                        bucket.inc(count)
                histogram._sum.inc(counts[-1])
            for name, counter in self.cache_counters.items():
                counter.inc(self._increase(name, stats[name]))
            for path, total in self._pipeline.execution_totals().items():
                increase = self._increase("executions:" + path, total)
                if increase:
                    self._child(self.executions, path, MODEL_VERSION).inc(increase)
            self.cache_models.set(len(stats["models"]))

    def _increase(self, key: str, value: int) -> int:
        # The native counters only grow, over loads and evictions alike.
        previous = self._sampled.get(key, 0)
        self._sampled[key] = value
        return value - previous

    def _child(self, metric, *labels: str):
        # .labels() checks and hashes the labels on every call.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def _sample_forever(self) -> None:
        while True:
            time.sleep(_SAMPLE_INTERVAL_S)
            self.sample()


class _Tally:
    """The requests recorded since the last sample."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, bool], int] = {}  # (model, endpoint, status, ran)
        self.body_bytes: dict[str, int] = {}
        self.failure_seconds: dict[str, float] = {}
        self.last_inference: dict[str, float] = {}  # Unix time
        # (phase, model): a count per bucket (the last one +Inf), then the sum of the seconds.
        self.seconds: dict[tuple[str, str], list] = {}


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

    on_head = on_get
