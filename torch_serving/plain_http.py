"""Plain HTTP/1.1 requests, read from peeked bytes, for answers in the event loop.

``ServingWorker`` answers a quick request in its event loop
(torch_serving.worker). There, gunicorn's request parser cost a small
request more than our decoding, forward and encoding together
(docs/performance.md), so the worker reads such a request itself from the
bytes it peeked at, when the request is in a plain form that means the same
to both readers:

* HTTP/1.1 with an origin-form target of printable ASCII, no fragment;
* header names that are tokens without ``_``, each given once, none of
  those that change how gunicorn frames the exchange (``Connection``,
  ``Transfer-Encoding``, ``Expect``, ``Upgrade``, ``HTTP2-Settings``) or
  what a proxy may set in the environ (``Forwarded``, ``X-Forwarded-*``,
  the configured secure-scheme headers);
* header values of visible ASCII, spaces and tabs;
* within gunicorn's limits on the request line, header count and header
  size, and a Content-Length of plain digits with the whole body there.

Anything else is read by gunicorn as before. A plain request carries what
gunicorn's ``Request`` carries for the same bytes (tests/unit/test_plain_http.py
compares them), so that gunicorn's own ``handle_request`` answers it: the
environ, the status line, headers, framing and access line are gunicorn's.
"""

from __future__ import annotations

import io
import re
from typing import Any

from gunicorn.http.message import (
    DEFAULT_MAX_HEADERFIELD_SIZE,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    RFC9112_TARGET_INVALID,
    TOKEN_RE,
)

__all__ = ["PlainReader", "PlainRequest"]

_METHOD = re.compile(r"[A-Z]{3,20}")  # what gunicorn accepts by default, upper case only
_VALUE = re.compile(r"[\x20-\x7e\t]*")  # gunicorn's values less obs-text
# Headers that change how gunicorn frames the exchange, or what a proxy may set in the environ.
_NOT_PLAIN = frozenset({"CONNECTION", "TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS", "FORWARDED"})


class PlainRequest:
    """A plain request, with what gunicorn's ``handle_request`` reads of its ``Request``."""

    __slots__ = ("body", "body_start", "headers", "method", "path", "query", "size", "uri")

    version = (1, 1)
    scheme = "http"
    _expected_100_continue = False  # an Expect header makes a request not plain
    proxy_protocol_info = None  # gunicorn reads it only with a connection's first request

    def __init__(self, method: str, uri: str, headers: list[tuple[str, str]], body_start: int, size: int) -> None:
        self.method = method
        self.uri = uri
        self.path, _, self.query = uri.partition("?")
        self.headers = headers  # names upper-cased, values stripped, as gunicorn has them
        self.body_start = body_start  # where the body starts in the request's bytes
        self.size = size  # the request's bytes, headers and body
        self.body: io.BytesIO | None = None  # once the bytes are taken off the socket (``received``)

    def received(self, data: memoryview) -> None:
        """Keep the body of the request's bytes ``data``, taken off the socket."""
        self.body = io.BytesIO(bytes(data[self.body_start : self.size]))

    def should_close(self) -> bool:
        # HTTP/1.1 without a Connection header keeps the connection open.
        return False


class PlainReader:
    """Reads plain requests (see the module's docstring) under a gunicorn configuration.

    Args:
        cfg: the worker's gunicorn configuration, for its limits, its
            secure-scheme headers and the environ's constant part.
    """

    def __init__(self, cfg: Any) -> None:
        self._line_limit = cfg.limit_request_line if cfg.limit_request_line > 0 else MAX_REQUEST_LINE
        fields = cfg.limit_request_fields
        self._fields_limit = fields if 0 < fields <= MAX_HEADERS else MAX_HEADERS
        field_size = cfg.limit_request_field_size
        self._field_limit = field_size if field_size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE
        # The most bytes a request line and headers within those limits take, their end included.
        self.head_limit = self._line_limit + self._fields_limit * self._field_limit + 2
        self._refused = _NOT_PLAIN | {name.upper() for name in cfg.secure_scheme_headers}
        # Peeking at a TLS connection shows no HTTP.
        self._enabled = not cfg.is_ssl

    def read(self, data: bytearray, size: int) -> PlainRequest | None:
        """Return the plain request at the start of ``data[:size]``, or None unless it is plain and all there."""
        if not self._enabled:
            return None
        end = data.find(b"\r\n\r\n", 0, size)
        if end < 0:
            return None
        lines = data[:end].decode("latin-1").split("\r\n")
        request_line = lines[0]
        parts = request_line.split(" ")
        if (
            len(parts) != 3
            or parts[2] != "HTTP/1.1"
            or len(request_line) + 2 > self._line_limit
            or not _METHOD.fullmatch(parts[0])
            or not parts[1].startswith("/")
            or parts[1].startswith("//")  # read as an authority
            or "#" in parts[1]
            or RFC9112_TARGET_INVALID.search(parts[1])
            or len(lines) > self._fields_limit
        ):
            return None
        headers = []
        seen = set()
        length = 0
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = name.upper()
            if (
                not colon
                or len(line) + 2 > self._field_limit
                or not TOKEN_RE.fullmatch(name)
                or "_" in name  # gunicorn drops such headers
                or name in seen
                or name in self._refused
                or name.startswith("X-FORWARDED-")
                or not _VALUE.fullmatch(value)
            ):
                return None
            seen.add(name)
            value = value.strip(" \t")
            if name == "CONTENT-LENGTH":
                if not (value.isascii() and value.isdigit()):
                    return None
                length = int(value)
            headers.append((name, value))
        body_start = end + 4
        if body_start + length > size:
            return None
        return PlainRequest(parts[0], parts[1], headers, body_start, body_start + length)
