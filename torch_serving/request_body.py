"""Reading request bodies within the size limit, into native memory.

Under gunicorn, a body of known length is received straight from the
client's socket into a ``RequestBody`` (native memory with the JSON
parser's padding after it), which the native core parses where it lies.
Gunicorn's own reader would hand it over through several Python copies,
which cost about as much CPU as parsing a 3 MB tensor body (see
docs/performance.md). Anywhere else, and for chunked bodies, the server's
stream is read and copied once into a ``RequestBody``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import falcon
from gunicorn.http.body import Body, ChunkedReader, LengthReader

from torch_serving._native import RequestBody
from torch_serving.environ import SEND_CONTINUE
from torch_serving.errors import RequestError

__all__ = ["read_body"]

# Read in pieces so a body without Content-Length is capped while it streams.
_READ_CHUNK = 1 << 20
# The shortest wait for body bytes: a socket timeout of 0 would mean non-blocking.
_MIN_WAIT_S = 0.001


def read_body(
    req: falcon.Request, limit: int, deadline: float, before_continue: Callable[[], object] | None = None
) -> RequestBody:
    """Return the whole request body.

    Args:
        req: the request.
        limit: the largest body accepted, in bytes.
        deadline: ``time.monotonic()`` by which the body must have arrived;
            under gunicorn, a client that sends it slower gets 408.
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
    if length is not None:
        received = _receive_from_gunicorn(req.env, length, deadline)
        if received is None:
            with _bounded_by(req.env, deadline):
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
    # Without Content-Length (chunked), the server's stream ends with the
    # body; Falcon's bounded stream would read nothing.
    _refuse_chunks_past(req.env, limit)
    pieces, total = [], 0
    with _bounded_by(req.env, deadline) as rearm:
        while chunk := req.stream.read(_READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise _too_large(f"body exceeds the limit of {limit} bytes")
            pieces.append(chunk)
            rearm()
    return RequestBody(b"".join(pieces))


@contextlib.contextmanager
def _bounded_by(env: dict, deadline: float, progress: Callable[[], str] = str) -> Iterator[Callable[[], None]]:
    """Let reads from gunicorn's client socket in the block end at ``deadline`` with 408.

    Each wait for data is bounded by the time left when the timeout was
    last armed; the block calls the function it is given to arm it again
    between reads. ``progress()`` says, for the 408's detail, how much
    arrived. Reads that are not from gunicorn's reader of its socket (outside
    gunicorn, or a body the worker already took off it) are not bounded.
    """
    sock = env.get("gunicorn.socket")
    if sock is None or not isinstance(env.get("wsgi.input"), Body) or sock.gettimeout() is not None:
        yield lambda: None
        return

    def rearm() -> None:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise TimeoutError
        sock.settimeout(max(remaining_s, _MIN_WAIT_S))

    try:
        rearm()
        yield rearm
    except TimeoutError:
        # Gunicorn must close the connection: where the next request starts is unknown.
        stream = env.get("wsgi.input")
        if isinstance(stream, Body):
            stream.failed = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        raise RequestError(
            408,
            "Request Timeout",
            f"the request body did not arrive before the request's deadline{progress()}",
        ) from None
    finally:
        sock.settimeout(None)


def _receive_from_gunicorn(env: dict, length: int, deadline: float) -> tuple[RequestBody, int] | None:
    """Receive a body of ``length`` bytes from gunicorn's client socket.

    Returns the body and how many of its bytes arrived (fewer when the
    client stopped early), or None, having read nothing, unless the body is
    gunicorn's unread, not-chunked body on a plain blocking socket.
    """
    stream = env.get("wsgi.input")
    sock = env.get("gunicorn.socket")
    reader = getattr(stream, "reader", None)
    if (
        sock is None
        or not isinstance(stream, Body)
        or not isinstance(reader, LengthReader)
        or reader.length != length
        or stream.buf.tell()
        or not hasattr(reader.unreader, "take_buffered")
        or sock.gettimeout() is not None
    ):
        return None
    # Gunicorn may hold the body's first bytes (read with the headers), and
    # bytes of the next pipelined request after them, which it must keep.
    held = reader.unreader.take_buffered()
    if len(held) > length:
        reader.unreader.unread(held[length:])
        held = held[:length]
    body = RequestBody(length)
    view = memoryview(body)
    view[: len(held)] = held
    received = len(held)
    if received < length:  # small bodies came with the headers: no system call

        def progress() -> str:
            return f" (received {received} of the {length} bytes Content-Length announced)"

        with _bounded_by(env, deadline, progress) as rearm:
            while received < length:
                count = sock.recv_into(view[received:])
                if count == 0:
                    break
                received += count
                rearm()
    # Gunicorn must not read this body again: it is consumed, or after an
    # early end, gone.
    reader.length = 0
    return body, received


def _refuse_chunks_past(env: dict, limit: int) -> None:
    """Have gunicorn's chunked reader raise 413 as soon as the chunk sizes announced pass ``limit``,
    before it waits for the bytes of a chunk that could never be taken."""
    stream = env.get("wsgi.input")
    reader = getattr(stream, "reader", None)
    if not isinstance(stream, Body) or not isinstance(reader, ChunkedReader):
        return
    parse_chunk_size = reader.parse_chunk_size
    announced = 0

    def bounded(unreader, data=None):
        nonlocal announced
        size, rest = parse_chunk_size(unreader, data)
        announced += size
        if announced > limit:
            # Raised in gunicorn's reader, which marks the body failed: the connection closes.
            raise _too_large(f"chunks announce {announced} bytes, over the limit of {limit} bytes")
        return size, rest

    reader.parse_chunk_size = bounded


def _too_large(detail: str) -> RequestError:
    return RequestError(413, "Request body too large", detail)
