"""WSGI environ keys through which ``ServingWorker`` tells the application about a request.

The application reads them here, under any host: without ``ServingWorker``
a request arrived when the application first looks, and runs on a thread.
This module loads no torch, so the worker (which must not) and the
application both use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = [
    "ARRIVED",
    "BODY_SOURCE",
    "DEFERRED",
    "ON_EVENT_LOOP",
    "SEND_CONTINUE",
    "BodySource",
    "BodyTimeout",
    "arrival_time",
    "deferred_call",
    "event_loop_model",
    "on_event_loop",
]

# When the worker's event loop handed the request over (``time.monotonic()``): its deadline counts from there.
ARRIVED = "torch_serving.arrived"
# Present when the request is answered in the worker's event loop, which must never wait: the model
# file (relative to the root) that the worker's check (``Admission.event_loop_route``) found loaded, unchanged and
# quick, which the application serves without looking it up again.
ON_EVENT_LOOP = "torch_serving.on_event_loop"

# Present when the request was queued from the worker's event loop (``torch_serving.event_loop_queue``) and
# its batch has run: its ``Deferred``, which holds the answer the application gives.
DEFERRED = "torch_serving.deferred"

# A function that sends the interim ``100 Continue`` the client asked for with
# ``Expect: 100-continue``: the application calls it just before it reads the
# body, once the headers cannot decide the answer any more (404, 413).
# Absent when nothing is owed.
SEND_CONTINUE = "torch_serving.send_continue"

# The worker's ``BodySource``: reads the request's body off the client's socket within a deadline.
# Absent elsewhere, and for a request the event loop answers (its body is in memory already): the
# application then reads ``wsgi.input``, without a bound in time.
BODY_SOURCE = "torch_serving.body_source"


class BodyTimeout(TimeoutError):
    """The body did not arrive by the deadline; the connection closes after the answer.

    Args:
        received: the bytes of it that arrived, when known.
    """

    def __init__(self, received: int | None = None) -> None:
        super().__init__(received)
        self.received = received


class BodySource(Protocol):
    """How the worker reads a request's body for the application (``BODY_SOURCE``)."""

    def receive(
        self, environ: dict, allocate: Callable[[int], Any], length: int, deadline: float
    ) -> tuple[Any, int] | None:
        """Receive the body of ``length`` bytes into ``allocate(length)`` (a writable buffer) and return it
        with how many bytes arrived (fewer when the client stopped early); None, having read nothing,
        when only ``wsgi.input`` can read it. Raises BodyTimeout past ``deadline``."""

    def bounded(self, environ: dict, deadline: float) -> AbstractContextManager[Callable[[], None]]:
        """A block whose reads of ``wsgi.input`` raise BodyTimeout once ``deadline`` passes; it gets a
        function to call between reads, which arms the bound again."""

    def limit_chunks(self, environ: dict, limit: int, refuse: Callable[[int], Exception]) -> None:
        """Have reads of a chunked body raise ``refuse(announced)`` as soon as the chunk sizes announced
        pass ``limit`` bytes, before waiting for a chunk that could never be taken."""


def arrival_time(environ: dict) -> float:
    """When the request of ``environ`` arrived (``time.monotonic()``)."""
    return environ.get(ARRIVED) or time.monotonic()


def on_event_loop(environ: dict) -> bool:
    """Whether the request of ``environ`` is answered in its worker's event loop."""
    return ON_EVENT_LOOP in environ


def event_loop_model(environ: dict) -> str | None:
    """The model file the worker's event loop checked for the request of ``environ``, which it answers
    (``ON_EVENT_LOOP``); None when a thread answers it."""
    return environ.get(ON_EVENT_LOOP)


def deferred_call(environ: dict) -> Any:
    """The ``Deferred`` holding the answer to the request of ``environ``, queued from the worker's event
    loop (``DEFERRED``); None when it was not."""
    return environ.get(DEFERRED)
