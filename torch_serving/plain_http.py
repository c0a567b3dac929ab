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

Anything else is read by gunicorn as before. The environ is the one
gunicorn builds for the same request (tests/unit/test_plain_http.py compares
them), without ``gunicorn.socket`` (the body is read already, and nothing
may wait in the loop) and ``wsgi.early_hints``. The answer is written by
gunicorn's own ``Response``, so its status line, headers and framing are
gunicorn's too.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

from gunicorn import util
from gunicorn.http.wsgi import base_environ

__all__ = ["PlainReader", "PlainRequest"]

_METHOD = re.compile(r"[A-Z]{3,20}")
_TARGET = re.compile(r"/(?!/)[\x21-\x22\x24-\x7e]*")  # origin-form, no '#'; '//' would be read as an authority
_NAME = re.compile(r"[!#$%&'*+\-.^`|~0-9A-Za-z]+")  # an RFC 9110 token without '_'
_VALUE = re.compile(r"[\x20-\x7e\t]*")
_FRAMING = frozenset({"CONNECTION", "TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS", "FORWARDED"})
# Gunicorn's own bounds where a setting of 0 means none.
_MAX_REQUEST_LINE = 8190
_MAX_HEADERS = 32768
_MAX_FIELD_SIZE = 8190


class PlainRequest:
    """A plain request, with what gunicorn's ``Response`` and access log read of a request."""

    __slots__ = ("body_start", "headers", "method", "path", "query", "size", "uri")

    version = (1, 1)
    body = None  # read by gunicorn's error answer; this body is read already

    def __init__(self, method: str, uri: str, headers: list[tuple[str, str]], body_start: int, size: int) -> None:
        self.method = method
        self.uri = uri
        self.path, _, self.query = uri.partition("?")
        self.headers = headers  # names upper-cased, values stripped, as gunicorn has them
        self.body_start = body_start  # where the body starts in the request's bytes
        self.size = size  # the request's bytes, headers and body

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
        self._line_limit = cfg.limit_request_line if cfg.limit_request_line > 0 else _MAX_REQUEST_LINE
        fields = cfg.limit_request_fields
        self._fields_limit = fields if 0 < fields <= _MAX_HEADERS else _MAX_HEADERS
        self._field_limit = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else _MAX_FIELD_SIZE
        self._refused = _FRAMING | {name.upper() for name in cfg.secure_scheme_headers}
        # A SCRIPT_NAME in the environment moves part of the path out of PATH_INFO.
        self._enabled = not cfg.is_ssl and cfg.proxy_protocol == "off" and not os.environ.get("SCRIPT_NAME")
        self._environ = base_environ(cfg)
        self._environ["wsgi.multithread"] = True  # as gunicorn's gthread worker sets it

    def read(self, data: bytearray, size: int, server: Any) -> PlainRequest | None:
        """Return the plain request at the start of ``data[:size]``, received by a listener at ``server``,
        or None unless it is plain and all there, and the listener a TCP one (on another, gunicorn
        takes the server's name from the Host header)."""
        if not self._enabled or not isinstance(server, tuple):
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
            or not _TARGET.fullmatch(parts[1])
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
                or not _NAME.fullmatch(name)
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

    def environ(self, request: PlainRequest, body: bytes, client: Any, server: Any) -> dict[str, Any]:
        """Return the WSGI environ of ``request``, whose body is ``body``, on a TCP connection from
        ``client`` to ``server``."""
        environ = dict(self._environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["REQUEST_METHOD"] = request.method
        environ["QUERY_STRING"] = request.query
        environ["RAW_URI"] = request.uri
        environ["SERVER_PROTOCOL"] = "HTTP/1.1"
        for name, value in request.headers:
            if name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
            elif name == "CONTENT-LENGTH":
                environ["CONTENT_LENGTH"] = value
            else:
                environ["HTTP_" + name.replace("-", "_")] = value
        environ["wsgi.url_scheme"] = "http"
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1])
        environ["PATH_INFO"] = util.unquote_to_wsgi_str(request.path)
        environ["SCRIPT_NAME"] = ""
        return environ
