"""Plain HTTP/1.1 requests, read from peeked bytes and answered in the event loop.

``ServingWorker`` answers a quick request in its event loop, and one it
queued there once its forward has run (torch_serving.worker). There,
gunicorn's request parser cost a small request more than our decoding,
forward and encoding together, and its ``handle_request`` (the environ, the
response's headers and framing) about as much as the application's own part
(docs/performance.md). So the worker reads such a request itself from the
bytes it peeked at, when the request is in a plain form that means the same
to both readers:

* HTTP/1.1 with an origin-form target of printable ASCII, no fragment;
* header names that are tokens without ``_``, each given once, none of
  those that change how gunicorn frames the exchange (``Connection`` other
  than ``keep-alive``, which Python's ``requests`` sends and HTTP/1.1
  means anyway; ``Transfer-Encoding``, ``Expect``, ``Upgrade``,
  ``HTTP2-Settings``) or
  what a proxy may set in the environ (``Forwarded``, ``X-Forwarded-*``,
  the configured secure-scheme headers);
* header values of visible ASCII, spaces and tabs;
* within gunicorn's limits on the request line, header count and header
  size, and a Content-Length of plain digits with the whole body there;
* under the process's ``SCRIPT_NAME``, if it has one.

Anything else is read by gunicorn as before. A plain request carries what
gunicorn's ``Request`` carries for the same bytes, ``PlainReader.environ``
is the environ gunicorn's ``wsgi.create`` builds from it, and
``PlainResponse`` answers what gunicorn's ``Response`` would write
(tests/unit/test_plain_http.py compares them): the application, gunicorn's
hooks and its access log see the same request and answer either way.
"""

from __future__ import annotations

import io
import os
import re
import time
from email.utils import formatdate
from typing import Any

from gunicorn import SERVER
from gunicorn.http.message import (
    DEFAULT_MAX_HEADERFIELD_SIZE,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    RFC9112_TARGET_INVALID,
    TOKEN_RE,
)
from gunicorn.http.errors import InvalidResponseHeader, InvalidResponseHeaderName
from gunicorn.http.wsgi import HEADER_VALUE_RE, STATUS_RE, WSGIErrorsWrapper, base_environ
from gunicorn.util import is_hoppish, unquote_to_wsgi_str

__all__ = ["HttpDate", "PlainReader", "PlainRequest", "PlainResponse"]

_METHOD = re.compile(r"[A-Z]{3,20}")  # what gunicorn accepts by default, upper case only
_VALUE = re.compile(r"[\x20-\x7e\t]*")  # gunicorn's values less obs-text
# Headers that change how gunicorn frames the exchange, or what a proxy may set in the environ
# (``Connection`` only when it is not ``keep-alive``: see ``PlainReader.read``).
_NOT_PLAIN = frozenset({"TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS", "FORWARDED"})


class PlainRequest:
    """A plain request, with what gunicorn's hooks, access log and error answers read of its ``Request``."""

    __slots__ = ("body", "body_start", "headers", "method", "path", "query", "size", "uri")

    version = (1, 1)
    scheme = "http"

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
        # What gunicorn's environ holds for every request of a gthread worker (it reads SCRIPT_NAME
        # from the process's environment for each request; no one changes it while serving).
        self._script_name = os.environ.get("SCRIPT_NAME", "")
        self._constant = base_environ(cfg) | {
            "wsgi.multithread": True,
            "wsgi.url_scheme": PlainRequest.scheme,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SCRIPT_NAME": self._script_name,
            "gunicorn.socket": None,  # the body is in memory: nothing reads the socket
        }
        self._cfg = cfg

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
            or not parts[1].startswith(self._script_name)
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
            if name == "CONNECTION" and value.lower() != "keep-alive":
                return None  # close, upgrade, or hop-by-hop names: gunicorn frames the exchange by them
            if name == "CONTENT-LENGTH":
                if not (value.isascii() and value.isdigit()):
                    return None
                length = int(value)
            headers.append((name, value))
        body_start = end + 4
        if body_start + length > size:
            return None
        return PlainRequest(parts[0], parts[1], headers, body_start, body_start + length)

    def environ(self, request: PlainRequest, client: Any, server: Any) -> dict[str, Any]:
        """The environ gunicorn's ``wsgi.create`` builds for ``request``, its body received, on a
        connection from ``client`` to ``server`` (gunicorn's addresses), less ``wsgi.early_hints``
        (nothing can be sent before an answer made in the event loop)."""
        environ = self._constant.copy()
        environ["wsgi.errors"] = WSGIErrorsWrapper(self._cfg)  # it holds the log's streams, which USR1 reopens
        environ["wsgi.input"] = request.body
        environ["REQUEST_METHOD"] = request.method
        environ["QUERY_STRING"] = request.query
        environ["RAW_URI"] = request.uri
        host = None
        for name, value in request.headers:  # each given once, none with "_": no key repeats
            if name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
            elif name == "CONTENT-LENGTH":
                environ["CONTENT_LENGTH"] = value
            else:
                if name == "HOST":
                    host = value
                environ["HTTP_" + name.replace("-", "_")] = value
        if isinstance(client, str):
            environ["REMOTE_ADDR"] = client
        elif isinstance(client, bytes):
            environ["REMOTE_ADDR"] = client.decode()
        else:
            environ["REMOTE_ADDR"] = client[0]
            environ["REMOTE_PORT"] = str(client[1])
        if isinstance(server, str):
            server = server.split(":")
            if len(server) == 1:  # a unix socket: the name and port come from the Host header, if any
                if host:
                    server = host.split(":")
                    if len(server) == 1:
                        server.append(80)
                else:
                    server.append("")
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1])
        environ["PATH_INFO"] = unquote_to_wsgi_str(request.path[len(self._script_name) :])
        return environ


class PlainResponse:
    """What gunicorn's ``Response`` is to the application (``start_response``), gunicorn's hooks and
    its access log, for a plain request answered in the event loop: ``answer`` returns the bytes
    gunicorn would write, the ``Date`` header aside, instead of writing them.

    Args:
        date: the ``Date`` header's value (gunicorn's ``util.http_date()``; ``HttpDate``).
        method: the request's method (an answer to ``HEAD`` has no body).
    """

    __slots__ = (
        "_date",
        "_head",
        "_omits_body",
        "_upgrade",
        "_written",
        "headers",
        "must_close",
        "response_length",
        "sent",
        "status",
        "status_code",
    )

    def __init__(self, date: str, method: str) -> None:
        self._date = date
        self._head = method == "HEAD"
        self._written: list[bytes] = []
        self._omits_body = False
        self._upgrade = False
        self.status: str | None = None
        self.status_code: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.response_length: int | None = None
        self.sent = 0
        self.must_close = False

    def force_close(self) -> None:
        self.must_close = True

    def should_close(self) -> bool:
        """Whether the connection closes after the answer (a plain request keeps it open unless told)."""
        return self.must_close

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None):
        # Nothing is written before the application returns: with ``exc_info``, the new status replaces the old.
        if exc_info is None and self.status is not None:
            raise AssertionError("Response headers already set!")
        if not isinstance(status, str):
            raise TypeError(f"{status!r} is not a string")
        if not STATUS_RE.fullmatch(status):
            raise ValueError(f"Invalid status {status!r}")
        self.status = status
        try:
            self.status_code = int(status.split()[0])
        except ValueError:
            self.status_code = None
        kept = []
        self.response_length = None
        self._upgrade = False
        for name, value in headers:
            if not isinstance(name, str):
                raise TypeError(f"{name!r} is not a string")
            if not TOKEN_RE.fullmatch(name):
                raise InvalidResponseHeaderName(repr(name))
            if not isinstance(value, str):
                raise TypeError(f"{value!r} is not a string")
            if not HEADER_VALUE_RE.fullmatch(value):
                raise InvalidResponseHeader(repr(name))  # the name only, as gunicorn: the value may be secret
            value = value.strip(" \t")
            lowered = name.lower()
            if lowered == "content-length":
                self.response_length = int(value)
            elif is_hoppish(name):
                if lowered == "connection" and value.lower() == "upgrade":
                    self._upgrade = True
                elif lowered == "upgrade" and value.lower() == "websocket":
                    kept.append((name, value))
                continue  # gunicorn writes its own Connection header
            kept.append((name, value))
        code = self.status_code
        # RFC 9110: no body after HEAD, 1xx, 204 or 304, and no Content-Length with 1xx or 204.
        self._omits_body = self._head or code in (204, 304) or (code is not None and 100 <= code < 200)
        if code == 204 or (code is not None and 100 <= code < 200):
            kept = [(name, value) for name, value in kept if name.lower() != "content-length"]
            self.response_length = None
        self.headers = kept
        return self._write

    def _write(self, data: bytes) -> None:
        """The WSGI ``write`` callable."""
        if not isinstance(data, bytes):
            raise TypeError(f"{data!r} is not a byte")
        self._written.append(data)

    def answer(self, chunks) -> bytes:
        """The status line, headers and body gunicorn would write for the application's answer, whose
        body is ``chunks`` (what the application returned)."""
        for chunk in chunks:
            self._write(chunk)
        chunked = self.response_length is None and not self._omits_body
        if self._omits_body:
            body = b""
        elif chunked:  # each write a chunk of its own, as gunicorn sends them
            body = b"".join(b"%X\r\n%s\r\n" % (len(chunk), chunk) for chunk in self._written if chunk)
        else:
            body = b"".join(self._written)[: self.response_length]  # never more than announced
        head = [
            f"HTTP/1.1 {self.status}\r\nServer: {SERVER}\r\nDate: {self._date}\r\n",
            f"Connection: {'upgrade' if self._upgrade else 'close' if self.must_close else 'keep-alive'}\r\n",
        ]
        if chunked:
            head.append("Transfer-Encoding: chunked\r\n")
        head.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        head.append("\r\n")
        if chunked:
            self.sent = sum(len(chunk) for chunk in self._written)
            body += b"0\r\n\r\n"
        else:
            self.sent = len(body)
        return "".join(head).encode("latin-1") + body


class HttpDate:
    """The ``Date`` header's value now, as gunicorn's ``util.http_date()`` gives it, formatted once a
    second (each answer formatting it cost a small request a few percent of its rate)."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._value = formatdate(second, localtime=False, usegmt=True)
            self._second = second
        return self._value
