"""Reading request bodies within the size limit, into native memory.

Under torch-serving's worker, a body of known length is received straight
from the client's socket into a ``RequestBody`` (native memory with the JSON
parser's padding after it), which the native core parses where it lies:
gunicorn's own reader would hand it over through several Python copies,
which cost about as much CPU as parsing a 3 MB tensor body (see
docs/performance.md). The worker does that reading, and bounds every read by
the request's deadline, through the ``BodySource`` it puts in the environ;
this module knows nothing of gunicorn. Anywhere else, and for chunked
bodies, the server's stream is read and copied once into a ``RequestBody``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import falcon

from torch_serving._native import RequestBody
from torch_serving.environ import BODY_SOURCE, SEND_CONTINUE, BodySource, BodyTimeout
from torch_serving.errors import RequestError

__all__ = ["read_body"]

# Read in pieces so a body without Content-Length is capped while it streams.
_READ_CHUNK = 1 << 20
# Reads without a bound in time (no body source): one context, reused, since it holds no state.
_UNBOUNDED = contextlib.nullcontext(lambda: None)


def read_body(
    req: falcon.Request, limit: int, deadline: float, before_continue: Callable[[], object] | None = None
) -> RequestBody:
    """Return the whole request body.

    Args:
        req: the request.
        limit: the largest body accepted, in bytes.
        deadline: ``time.monotonic()`` by which the body must have arrived;
            under torch-serving's worker, a client that sends it slower gets 408.
        before_continue: called before a ``100 Continue`` the client asked
            for is sent, to raise what the headers already decide (a
            missing model).

    Raises:
        RequestError: 413 past ``limit``, 400 for a body shorter than its
            Content-Length, 415 for a compressed body, 408 past ``deadline``.
    """
    encoding = req.get_header("Content-Encoding")
    if encoding is not None and encoding.strip().lower() != "identity":
        raise RequestError(
            415,
            "Unsupported Media Type",
            f"Content-Encoding {encoding} is not supported; send the body uncompressed",
        )
    length = req.content_length
    if length is not None and length > limit:
        raise _too_large(f"body of {length} bytes exceeds the limit of {limit} bytes")
    send_continue = req.env.get(SEND_CONTINUE)
    if send_continue is not None:
        if before_continue is not None:
            before_continue()
        send_continue()
    source: BodySource | None = req.env.get(BODY_SOURCE)
    try:
        if length is not None:
            return _read_announced(req, source, length, deadline)
        return _read_chunked(req, source, limit, deadline)
    except BodyTimeout as timeout:
        progress = (
            ""
            if timeout.received is None or length is None
            else f" (received {timeout.received} of the {length} bytes Content-Length announced)"
        )
        raise RequestError(
            408,
            "Request Timeout",
            f"the request body did not arrive before the request's deadline{progress}",
        ) from None


def _read_announced(req: falcon.Request, source: BodySource | None, length: int, deadline: float) -> RequestBody:
    """The body of ``length`` bytes, Content-Length announced."""
    received = None if source is None else source.receive(req.env, RequestBody, length, deadline)
    if received is None:
        with _bounded(source, req.env, deadline):
            data = req.bounded_stream.read(length)
        received = RequestBody(data), len(data)
    body, count = received
    if count < length:
        raise RequestError(
            400,
            "Incomplete request body",
            f"received {count} of the {length} bytes Content-Length announced",
        )
    return body


def _read_chunked(req: falcon.Request, source: BodySource | None, limit: int, deadline: float) -> RequestBody:
    """A body without Content-Length: the server's stream ends with it (Falcon's bounded stream would read
    nothing)."""
    if source is not None:
        source.limit_chunks(
            req.env,
            limit,
            lambda announced: _too_large(f"chunks announce {announced} bytes, over the limit of {limit} bytes"),
        )
    pieces, total = [], 0
    with _bounded(source, req.env, deadline) as rearm:
        while chunk := req.stream.read(_READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise _too_large(f"body exceeds the limit of {limit} bytes")
            pieces.append(chunk)
            rearm()
    return RequestBody(b"".join(pieces))


def _bounded(source: BodySource | None, env: dict, deadline: float) -> AbstractContextManager[Callable[[], None]]:
    """``source``'s bound in time on reads of ``wsgi.input`` (none without a source); it gives the
    function that arms the bound again between reads."""
    return _UNBOUNDED if source is None else source.bounded(env, deadline)


def _too_large(detail: str) -> RequestError:
    return RequestError(413, "Request body too large", detail)
