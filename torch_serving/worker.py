"""The gunicorn worker torch-serving runs in: gthread with admission control.

Gunicorn's gthread worker hands every readable connection to its thread
pool, whose queue has no bound, and a request's clock would start only when
a thread takes it. This worker instead:

* holds at most its threads + ``queue_size`` requests, and answers a fast
  503 with ``Retry-After`` from its event loop beyond them, so a burst is
  refused at once instead of queueing without a deadline. A request counts
  from when its first bytes are there (a connection that has sent nothing
  waits in the event loop, as a kept-alive one does, and one that closes is
  closed there) until its application returns the answer, before it is
  written: a client that has its answer never finds its request still
  counted;
* runs a request on one of its ``threads`` core threads while one is free,
  and on one of ``queue_size`` spare threads otherwise (there it receives
  its body and runs like the others). A pool of all of them would wake
  a cold, idle thread for every request: that cost a small request a fifth
  of its rate (docs/performance.md). Spares keep stalled uploads from
  holding up everybody else;
* stamps each request with when the event loop handed it over, so the
  deadline counts from there (``arrival_time``);
* answers a request on a kept-alive connection in the event loop itself,
  without a thread, when it is all there, plain (``PlainReader``, which
  reads it in place of gunicorn's parser) and the application says it is
  quick (``QuickRequests``: its model is loaded, unchanged and fast, its
  body small). Handing a small request to a thread and its connection back
  to the loop, and gunicorn's parser, cost more than the request itself
  (docs/performance.md). Gunicorn's ``handle_request`` answers it;
* takes no request before the models ``--preload`` names are loaded;
* answers gunicorn's own refusals (a request line or headers over its limits,
  malformed HTTP) with the JSON error envelope instead of an HTML page.

The CLI passes ``--threads`` as gunicorn's threads and ``--queue-size``
as the application's ``queue_size`` (an application without one gets
``Config``'s default). No torch is loaded here: gunicorn imports the worker
class in its master.
"""

from __future__ import annotations

import contextlib
import errno
import html
import re
import selectors
import socket
import struct
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from gunicorn import util
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

from torch_serving.config import Config
from torch_serving.envelope import RETRY_AFTER, error_body, error_document
from torch_serving.plain_http import PlainReader, PlainRequest

__all__ = ["ServingWorker", "arrival_time", "on_event_loop"]

# How long a refused connection stays open for the client to read its 503:
# closing at once, with its request unread, would reset the connection and
# could lose the answer.
_REFUSED_LINGER_S = 2.0
_GUNICORN_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ([^\r\n]*)")
_GUNICORN_DETAIL = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.DOTALL)
_UNEXPECTED = "an unexpected error occurred; the server log has the details"
# The most a request answered in the event loop may hold, headers and body.
_PEEK_BYTES = 80 * 1024
# How long a send may make no progress on a connection once the event loop
# has answered on it: a client that stops reading must not hold up the loop.
_SEND_STALL_S = 2

_request = threading.local()


def arrival_time() -> float:
    """Return when the current request was handed to its thread (``time.monotonic()``).

    Under ``ServingWorker`` that is when the event loop found it readable;
    elsewhere it is now.
    """
    arrived = getattr(_request, "arrived", None)
    return time.monotonic() if arrived is None else arrived


def on_event_loop() -> bool:
    """Whether the current request runs in its worker's event loop, which must never wait."""
    return getattr(_request, "on_event_loop", False)


def _http_response(status: int, reason: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _CapturedSocket:
    """Stands in for the client socket while gunicorn writes its HTML error page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # non-blocking, so gunicorn writes at once

    def sendall(self, data: bytes) -> None:
        self.data += data


class ServingWorker(ThreadWorker):
    """Gunicorn's gthread worker with a bounded number of requests in flight."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Requests admitted: taken by the event loop, released by the thread
        # that answers them.
        self._admission = threading.Lock()
        self._in_flight = 0
        # Touched only by the event loop thread (enqueue_req, finish_request).
        self._on_core = 0
        queue_size = getattr(self.app, "queue_size", Config.queue_size)
        self._limit = self.cfg.threads + queue_size
        # Threads start on first use, after the fork.
        self._spare_pool = ThreadPoolExecutor(max(queue_size, 1), thread_name_prefix="spare")
        self._lingering: deque[tuple[float, socket.socket]] = deque()
        self._quick = None  # what says which requests are quick, once the app is loaded
        self._plain = PlainReader(self.cfg)
        self._peeked = bytearray(_PEEK_BYTES)
        self._busy_answer = _http_response(
            503,
            "Service Unavailable",
            error_body(
                503,
                "Server busy",
                f"this worker holds {self._limit} requests, its limit"
                f" ({self.cfg.threads} running, {queue_size} waiting); retry later",
            ),
            RETRY_AFTER,
        )

    def run(self) -> None:
        # Take no request before the application's preload is done, telling
        # the arbiter meanwhile that this worker is alive. Another WSGI
        # application than ``ServingApp`` has none.
        preload = getattr(self.wsgi, "preload", None)
        while preload is not None and not preload.wait(1.0):
            self.notify()
        # Under another WSGI application every request takes a thread.
        self._quick = getattr(self.wsgi, "quick_requests", None)
        self.wsgi = self._released_on_return(self.wsgi)
        super().run()

    def _released_on_return(self, app):
        """``app``, releasing the current request's admission when it returns its answer."""

        def answer(environ, start_response):
            try:
                return app(environ, start_response)
            finally:
                self._release(getattr(_request, "conn", None))

        return answer

    def _admit(self, conn) -> bool:
        """Count ``conn``'s request as in flight, unless the worker holds its limit."""
        with self._admission:
            if self._in_flight >= self._limit:
                return False
            self._in_flight += 1
        conn.admitted = True
        return True

    def _release(self, conn) -> None:
        """Stop counting ``conn``'s request, once: its answer is made, or it ended without one."""
        if conn is not None and getattr(conn, "admitted", False):
            conn.admitted = False
            with self._admission:
                self._in_flight -= 1

    def enqueue_req(self, conn) -> None:
        if not conn.initialized and not conn.data_ready:
            # A new connection: it holds no request until its first bytes arrive.
            self._await_first_bytes(conn)
            return
        if not self._admit(conn):
            self._refuse(conn)
            return
        conn.arrived = time.monotonic()
        conn.on_core = self._on_core < self.cfg.threads
        if conn.on_core:
            self._on_core += 1
            super().enqueue_req(conn)
            return
        # As gunicorn's enqueue_req does on its own pool.
        future = self._spare_pool.submit(self.handle, conn)
        future.add_done_callback(lambda done: self.method_queue.defer(self.finish_request, conn, done))

    def _await_first_bytes(self, conn) -> None:
        """Wait in the event loop, as gunicorn waits for a deferred connection, for ``conn`` to send;
        as long as gunicorn would wait in a thread and then in the loop."""
        conn.timeout = time.monotonic() + DEFAULT_WORKER_DATA_TIMEOUT + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def on_pending_socket_readable(self, conn, client) -> None:
        if self._peek(conn) == 0:
            self.poller.unregister(client)
            self.pending_conns.remove(conn)
            self._close_ended(conn)
            return
        super().on_pending_socket_readable(conn, client)

    def _peek(self, conn) -> int | None:
        """Peek at what ``conn`` has sent into ``_peeked``: its length, 0 when the client closed, None on error."""
        try:
            return conn.sock.recv_into(self._peeked, _PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return None

    def _close_ended(self, conn) -> None:
        """Close a connection whose client closed it without a request: it never held one."""
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn, fs) -> None:
        if conn.on_core:
            self._on_core -= 1
        super().finish_request(conn, fs)

    def handle(self, conn):
        # Every connection gets here with its first bytes there (enqueue_req).
        _request.arrived = conn.arrived
        _request.conn = conn
        try:
            return super().handle(conn)
        finally:
            _request.conn = None
            self._release(conn)

    def on_client_socket_readable(self, conn, client) -> None:
        received = self._peek(conn)
        if received == 0:
            self.poller.unregister(client)
            self.keepalived_conns.remove(conn)
            self._close_ended(conn)
            return
        request = self._quick_request(conn, received) if received else None
        if request is None or not self._admit(conn):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        if not getattr(conn, "send_bounded", False):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", _SEND_STALL_S, 0))
            conn.send_bounded = True
        conn.arrived = time.monotonic()
        conn.on_core = False
        _request.arrived = conn.arrived
        _request.on_event_loop = True
        _request.conn = conn
        try:
            kept = self._answer_in_loop(conn, request)
        finally:
            _request.on_event_loop = False
            _request.conn = None
            self._release(conn)
        self.finish_request(conn, _Finished(kept))

    def _quick_request(self, conn, received: int) -> PlainRequest | None:
        """The next request on kept-alive ``conn``, of which ``received`` bytes were peeked at, when it is
        plain, all in the socket, and quick, and gunicorn would keep the connection open after it; else
        None. Reads nothing."""
        if (
            self._quick is None
            or conn.is_http2
            or conn.parser.unreader.buf.tell()
            or not self.alive
            or not self.cfg.keepalive
            or self.nr + 1 >= self.max_requests
            or len(self.keepalived_conns) > self.max_keepalived  # counting ``conn``, about to leave it
        ):
            return None
        request = self._plain.read(self._peeked, received)
        if request is None or not self._quick(request.method, request.uri, request.size - request.body_start):
            return None
        return request

    def _answer_in_loop(self, conn, request: PlainRequest) -> bool:
        """Answer ``request`` with gunicorn's ``handle_request``, as its ``handle`` does once it has
        parsed one; return whether ``conn`` stays open."""
        sock = conn.sock
        try:
            sock.setblocking(True)
            # The bytes peeked at, taken off the socket into the same buffer.
            if sock.recv_into(self._peeked, request.size, socket.MSG_WAITALL) != request.size:
                return False
            request.received(memoryview(self._peeked))
            return self.handle_request(request, conn)
        except StopIteration:  # gunicorn's: the answer broke off, the connection is closed
            pass
        except BlockingIOError:
            self.log.warning(
                "closed the connection of %s, which read none of its answer for %d s", conn.client, _SEND_STALL_S
            )
        except OSError as error:
            if error.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.debug("connection of %s ended while answering it: %s", conn.client, error)
            else:
                self.log.exception("Socket error processing request.")
        except Exception as error:
            self.handle_error(request, sock, conn.client, error)
        return False

    def _refuse(self, conn) -> None:
        """Answer 503 and close, from the event loop, without a thread."""
        self.nr_conns -= 1
        sock = conn.sock
        try:
            sock.setblocking(False)
            _discard_readable(sock)
            sock.send(self._busy_answer)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            util.close(sock)
            return
        self._lingering.append((time.monotonic() + _REFUSED_LINGER_S, sock))
        self.poller.register(sock, selectors.EVENT_READ, partial(self._on_refused_readable, sock))

    def _on_refused_readable(self, sock: socket.socket, _fileobj) -> None:
        try:
            if _discard_readable(sock):
                return
        except OSError:
            pass
        self._close_lingering(sock)

    def _close_lingering(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        util.close(sock)

    def murder_keepalived(self, force: bool = False) -> None:
        # Runs on every turn of the event loop: also close refused
        # connections whose client has had its time to read the 503.
        super().murder_keepalived(force)
        now = time.monotonic()
        while self._lingering and (force or self._lingering[0][0] <= now):
            _, sock = self._lingering.popleft()
            if sock.fileno() >= 0:
                self._close_lingering(sock)

    def handle_error(self, req, client, addr, exc) -> None:
        # Gunicorn decides the status and logs; the page it writes is
        # replaced by the JSON envelope.
        page = _CapturedSocket()
        super().handle_error(req, page, addr, exc)
        answer = page.data  # should gunicorn's page change shape, it is sent as it is
        status_line = _GUNICORN_STATUS.match(page.data)
        if status_line is not None:
            status, reason = int(status_line.group(1)), status_line.group(2).decode("latin-1")
            detail_match = _GUNICORN_DETAIL.search(page.data)
            detail = html.unescape(detail_match.group(1).decode("latin-1")) if detail_match else ""
            path = getattr(req, "path", None) or ""
            answer = _http_response(status, reason, error_document(path, status, reason, detail or _UNEXPECTED), {})
        with contextlib.suppress(OSError):
            util.write_nonblock(client, answer)


class _Finished:
    """What ``finish_request`` reads of a request's future, for one answered in the event loop."""

    def __init__(self, kept: object) -> None:
        self._kept = kept

    def result(self) -> object:
        return self._kept

    def cancelled(self) -> bool:
        return False


def _discard_readable(sock: socket.socket) -> bool:
    """Read and drop what a non-blocking socket holds; return whether it is still open."""
    while True:
        try:
            if not sock.recv(65536):
                return False
        except BlockingIOError:
            return True
