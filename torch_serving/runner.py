"""Native calls, bounded and within per-request deadlines.

Native work cannot be interrupted once it runs (a TorchScript forward has no
cancellation point), so a request past its deadline is answered 504 while
its work finishes in the background, still holding its native thread. Each
request a worker admits has a native thread of its own
(``torch_serving._C.Executor``): the request thread hands the call over and
waits with the GIL released, and the call never takes the GIL. How many
forwards of a model run at once is its instances' business (its
scheduler's), so a request waiting for one still joins the next batch.
How many calls may be under way is the worker's admission's decision
(``torch_serving.Admission``), one count for HTTP and gRPC: ``ServingWorker``
enters it for every request before the application sees it, and for a host
that does not (plain gunicorn workers) the runner enters it for each call.
A call abandoned at its deadline stays counted there until it ends, since it
still takes a thread: beyond the limit a further request gets a fast 503
with ``Retry-After``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from torch_serving._native import Admission, DeadlineError, Deferred, Executor, GrpcCall, PhaseTimes
from torch_serving.envelope import BUSY, RETRY_AFTER, busy_detail
from torch_serving.errors import RequestError

__all__ = ["NativeRunner"]

T = TypeVar("T")


class NativeRunner:
    """Run native calls on a bounded pool, each within a deadline.

    Args:
        admission: the worker's admission: as many native calls may be under way at once as it admits
            requests, each on its own thread, and it counts the calls abandoned at their deadline; it
            times the calls made in an event loop against the loop's budget.
        timeout: seconds a request may take, from its arrival, before 504.

    Attributes:
        admits_calls: whether each call enters the admission (a 503 beyond its limit): True until the
            host says it enters the admission for every request itself (``ServingApp.admitted_by_host``).
    """

    def __init__(self, admission: Admission, timeout: float) -> None:
        self._admission = admission
        self._executor = Executor(admission.limit, admission)
        self._timeout = timeout
        self.admits_calls = True

    def deadline(self, arrived: float, sooner: float | None = None) -> float:
        """Return the ``time.monotonic()`` by which a request that arrived at ``arrived`` must be answered:
        ``sooner`` (a gRPC client's deadline) when it is earlier than the server's own."""
        own = arrived + self._timeout
        return own if sooner is None else min(sooner, own)

    def run(self, arrived: float, fn: Callable[..., T], *args: object) -> T:
        """Run the native call ``fn(*args)`` and return its result, or raise 503 or 504.

        Args:
            arrived: ``time.monotonic()`` when the request arrived.
            fn: a method of ``Pipeline`` whose last two parameters are ``executor`` and ``timeout``.
            *args: its arguments.

        Raises:
            RequestError: 503 when this worker is full, 504 past the deadline.
        """
        return self._call(arrived, self.deadline(arrived), fn, args, ())

    def run_measured(
        self,
        arrived: float,
        times: PhaseTimes | None,
        on_event_loop: bool,
        fn: Callable[..., T],
        *args: object,
        deadline: float | None = None,
    ) -> T:
        """Run ``fn(*args)`` as ``run`` does; ``fn`` (``Pipeline.serve`` or ``infer``) records its phases in
        ``times`` (nothing when None), and runs in this thread at once, timed by the worker's admission,
        when ``on_event_loop`` says this thread is a worker's event loop. A ``deadline`` earlier than the
        request's own (a gRPC client's) replaces it."""
        event_loop = self._admission if on_event_loop else None
        return self._call(arrived, self.deadline(arrived, deadline), fn, args, (times, event_loop))

    def deferred_answer(
        self, arrived: float, deferred: Deferred | GrpcCall, times: PhaseTimes | None, deadline: float | None = None
    ) -> bytes | None:
        """The answer to a request that arrived at ``arrived``, queued from an event loop and answered since
        (``torch_serving.event_loop_queue``), recording its phases in ``times``; or raise 504 as ``run``
        does. A ``deadline`` earlier than the request's own (a gRPC client's) replaces it. Of a gRPC call
        the native server ran, there is no answer to return: this records its phases, and raises its error."""
        try:
            return deferred.answer(times)
        except DeadlineError:
            raise _deadline_exceeded(arrived, self.deadline(arrived, deadline)) from None

    def _call(self, arrived: float, deadline: float, fn: Callable[..., T], args: tuple, extra: tuple) -> T:
        admits = self.admits_calls
        if admits and not self._admission.enter():
            raise RequestError(503, BUSY, busy_detail(self._admission.limit), headers=RETRY_AFTER)
        remaining = deadline - time.monotonic()
        try:
            # Positional: pybind11 matches keywords by name, at a cost a small request notices.
            return fn(*args, self._executor, max(remaining, 0.0), *extra)
        except DeadlineError:
            raise _deadline_exceeded(arrived, deadline) from None
        finally:
            if admits:
                self._admission.leave()


def _deadline_exceeded(arrived: float, deadline: float) -> RequestError:
    return RequestError(
        504,
        "Deadline exceeded",
        f"the request did not finish within the {deadline - arrived:g} s deadline; its work was abandoned",
    )
