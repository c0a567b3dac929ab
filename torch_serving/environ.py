"""WSGI environ keys through which ``ServingWorker`` tells the application about a request.

The application reads them here, under any host: without ``ServingWorker``
a request arrived when the application first looks, and runs on a thread.
This module loads no torch, so the worker (which must not) and the
application both use it.
"""

import time

__all__ = ["ARRIVED", "ON_EVENT_LOOP", "SEND_CONTINUE", "arrival_time", "on_event_loop"]

# When the worker's event loop handed the request over (``time.monotonic()``): its deadline counts from there.
ARRIVED = "torch_serving.arrived"
# Present when the request is answered in the worker's event loop, which must never wait.
ON_EVENT_LOOP = "torch_serving.on_event_loop"

# A function that sends the interim ``100 Continue`` the client asked for with
# ``Expect: 100-continue``: the application calls it just before it reads the
# body, once the headers cannot decide the answer any more (404, 413).
# Absent when nothing is owed.
SEND_CONTINUE = "torch_serving.send_continue"


def arrival_time(environ: dict) -> float:
    """When the request of ``environ`` arrived (``time.monotonic()``)."""
    return environ.get(ARRIVED) or time.monotonic()


def on_event_loop(environ: dict) -> bool:
    """Whether the request of ``environ`` is answered in its worker's event loop."""
    return ON_EVENT_LOOP in environ
