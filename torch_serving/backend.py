"""What every protocol's endpoints answer from, in one worker: its native pipeline and model cache,
admission, settings, warm start, side of the model repository, and metrics. ``create_app`` makes it;
the /v2, /v1 and gRPC endpoints take it whole."""

from __future__ import annotations

import dataclasses

from torch_serving._native import Admission, Pipeline
from torch_serving.config import Config
from torch_serving.metrics import Metrics
from torch_serving.preload import Preload
from torch_serving.repository import Repository
from torch_serving.runner import NativeRunner

__all__ = ["Backend"]


@dataclasses.dataclass(frozen=True)
class Backend:
    """One worker's serving state.

    Attributes:
        pipeline: the native pipeline holding the worker's model cache.
        admission: the requests the worker holds, HTTP and gRPC together, and which its event loops
            answer themselves.
        runner: what native calls go through, within their deadlines.
        config: the server settings.
        preload: the worker's warm start, which readiness waits for.
        repository: the worker's side of the model repository.
        metrics: the metrics requests are measured in (and statistics come from); None when off.
    """

    pipeline: Pipeline
    admission: Admission
    runner: NativeRunner
    config: Config
    preload: Preload
    repository: Repository
    metrics: Metrics | None
