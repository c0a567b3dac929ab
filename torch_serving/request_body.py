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

import falcon
from gunicorn.http.body import Body, LengthReader

from torch_serving._native import RequestBody
from torch_serving.errors import RequestError

__all__ = ["read_body"]

# Read in pieces so a body without Content-Length is capped while it streams.
_READ_CHUNK = 1 << 20


def read_body(req: falcon.Request, limit: int) -> RequestBody:
    """Return the whole request body.

    Args:
        req: the request.
        limit: the largest body accepted, in bytes.

    Raises:
        RequestError: 413 past ``limit``, 400 for a body shorter than its
            Content-Length, 415 for a compressed body.
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
    if length is not None:
        received = _receive_from_gunicorn(req.env, length)
        if received is None:
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
    pieces, total = [], 0
    while chunk := req.stream.read(_READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise _too_large(f"body exceeds the limit of {limit} bytes")
        pieces.append(chunk)
    return RequestBody(b"".join(pieces))


def _receive_from_gunicorn(env: dict, length: int) -> tuple[RequestBody, int] | None:
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
    while received < length:
        count = sock.recv_into(view[received:])
        if count == 0:
            break
        received += count
    # Gunicorn must not read this body again: it is consumed, or after an
    # early end, gone.
    reader.length = 0
    return body, received


def _too_large(detail: str) -> RequestError:
    return RequestError(413, "Request body too large", detail)
