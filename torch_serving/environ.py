"""WSGI environ keys through which ``ServingWorker`` tells the application about a request.

This module imports nothing, so the worker (which must not load torch) and
the application both use it.
"""

__all__ = ["SEND_CONTINUE"]

# A function that sends the interim ``100 Continue`` the client asked for with
# ``Expect: 100-continue``: the application calls it just before it reads the
# body, once the headers cannot decide the answer any more (404, 413).
# Absent when nothing is owed.
SEND_CONTINUE = "torch_serving.send_continue"
