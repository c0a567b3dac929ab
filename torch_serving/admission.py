"""How many requests a worker holds at once, whichever transport brought them.

A worker takes at most ``threads + queue_size`` requests at once, over HTTP
and gRPC together; beyond them it answers 503 (gRPC's ``UNAVAILABLE``) at
once, with ``Retry-After``, rather than queueing work it could not start in
time. The application owns the count and its worker's event loop (HTTP) and
gRPC service enter it: one count, so one transport cannot take what the
limit leaves the other. Torch-free: gunicorn's master imports the worker.
"""

from __future__ import annotations

import threading

__all__ = ["Admission"]


class Admission:
    """The requests a worker holds, up to ``limit``.

    Entered where a request is found (an event loop), left by whichever thread ends it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held = 0

    def enter(self) -> bool:
        """Count one more request and return True, or return False when the worker holds its limit."""
        with self._lock:
            if self._held >= self.limit:
                return False
            self._held += 1
            return True

    def leave(self) -> None:
        """Stop counting a request that entered."""
        with self._lock:
            self._held -= 1
