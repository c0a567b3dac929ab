"""Requests for loaded models (/serve and V2 inference), queued from a worker's event loop and answered
there once their forward has run, or at their deadline.

A request that is not quick spends nearly all of its time waiting for its model's forward. On a thread,
it hands its call to a native thread and wakes when that ends (for a batch, every request's thread
wakes), takes the GIL in turn and hands its answer back to the event loop; on these two-core machines
those wake-ups cost more than the request's own work around the forward (docs/performance.md). Queued
from the loop, a request has no thread: the model's scheduler runs each forward (a batch's, for a
batching model) on a native thread of its own, which encodes every answer and tells the loop once
(``Completions``, an eventfd the loop polls), and the loop makes each answer through the application as
for any request it answers itself. At its deadline a request is answered 504 by the scheduler's thread
that watches deadlines, whether still queued (its forward then never runs) or in a forward that runs on.

``ServingWorker`` uses it through the application's ``event_loop_queue`` (``ServingApp``): ``take`` says
how a request the admission routes to it (``Admission.event_loop_route``) is queued, if it is,
``submit`` queues one under a key, ``ready`` gives the keys of those answered since, and the
application answers each with its ``Deferred`` in the environ (``torch_serving.environ.DEFERRED``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import NamedTuple

from torch_serving._native import Completions, Deferred, Pipeline, RequestBody
from torch_serving.errors import RequestError
from torch_serving.runner import NativeRunner
from torch_serving.v2 import HEADER_LENGTH, json_part_length

__all__ = ["EventLoopQueue", "Queueable"]

_HEADER_LENGTH = HEADER_LENGTH.upper()


class Queueable(NamedTuple):
    """A request the event loop may queue, and how.

    Attributes:
        model: the model file it is for, relative to the model root.
        name: the model's name in its errors: the /serve identifier, or the V2 name.
        header_length: None for /serve; for V2 inference, the length of the body's JSON part (-1: all).
    """

    model: str
    name: str
    header_length: int | None


class EventLoopQueue:
    """The requests a worker's event loop queues and is told of once answered.

    Args:
        pipeline: the worker's native pipeline.
        runner: whose deadline each request gets.
        max_body_size: the largest body the application takes: a larger one takes a thread, whose
            answer refuses it.
    """

    def __init__(self, pipeline: Pipeline, runner: NativeRunner, max_body_size: int) -> None:
        self._pipeline = pipeline
        self._runner = runner
        self._max_body_size = max_body_size
        self._completions = Completions()
        self._keys = itertools.count()

    def fileno(self) -> int:
        """A file descriptor readable while answers are ready (``ready``)."""
        return self._completions.fileno()

    def take(self, route: tuple[str, str, str], headers: Sequence[tuple[str, str]], body_size: int) -> Queueable | None:
        """How the request that ``Admission.event_loop_route`` routed to the queue (``route``) is queued,
        given ``headers`` (upper-case names) that the application would take as they are; None when it
        takes a thread, whose answer refuses what this refuses."""
        if body_size > self._max_body_size:
            return None
        length_header = None
        for name, value in headers:
            if name == "CONTENT-ENCODING":
                return None  # read another way, or refused, by the application
            if name == _HEADER_LENGTH:
                length_header = value
        model, name, work = route
        if work == "serve":
            return Queueable(model, name, None)
        try:
            return Queueable(model, name, json_part_length(length_header, self._max_body_size))
        except RequestError:
            return None

    def submit(self, queueable: Queueable, body: bytes | RequestBody, arrived: float) -> tuple[int, Deferred]:
        """Queue the request ``take`` found queueable, with its ``body``, within the deadline of a request that
        arrived at ``arrived``; return the key ``ready`` gives once its answer is made, and its ``Deferred``."""
        key = next(self._keys)
        timeout = max(self._runner.deadline(arrived) - time.monotonic(), 0.0)
        model, name, header_length = queueable
        if header_length is None:
            return key, self._pipeline.submit_serve(model, name, body, timeout, self._completions, key)
        return key, self._pipeline.submit_infer(model, name, body, header_length, timeout, self._completions, key)

    def ready(self) -> list[int]:
        """The keys of the requests answered since the last call, oldest first."""
        return self._completions.take()
