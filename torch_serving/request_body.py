"""Reading request bodies within the size limit."""

from __future__ import annotations

import falcon

from torch_serving.errors import RequestError

__all__ = ["read_body"]

# Read in pieces so a body without Content-Length is capped while it streams.
_READ_CHUNK = 1 << 20


def read_body(req: falcon.Request, limit: int) -> bytes:
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
        body = req.bounded_stream.read(length)
        if len(body) < length:
            raise RequestError(
                400,
                "Incomplete request body",
                f"received {len(body)} of the {length} bytes Content-Length announced",
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
    return b"".join(pieces)


def _too_large(detail: str) -> RequestError:
    return RequestError(413, "Request body too large", detail)
