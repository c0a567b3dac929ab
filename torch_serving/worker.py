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
* gathers a request's line and headers in the event loop when they do not
  arrive at once, and answers 408 and closes should they not all be there
  within the request timeout (``--timeout``): in a thread the wait has no
  bound, and a few clients that never finish their headers would hold
  every request slot;
* stamps each request with when the event loop handed it over, so the
  deadline counts from there (the application reads it, and whether the
  request is answered in the event loop, from environ keys of
  ``torch_serving.environ``: it imports nothing of the worker);
* answers a request on a kept-alive connection in the event loop itself,
  without a thread, when it is all there, plain (``PlainReader``, which
  reads it in place of gunicorn's parser) and the application says the
  loop may answer it (``Admission.event_loop_route``: its model is loaded, unchanged
  and quick, its body small). Handing a small request to a thread and its connection back
  to the loop, and gunicorn's parser, cost more than the request itself
  (docs/performance.md). The answer is made as gunicorn's ``handle_request``
  makes it (its hooks, access line and limits), with the environ and the
  response gunicorn would build (``PlainReader.environ``, ``PlainResponse``),
  which cost a small request a seventh of its rate through gunicorn's own; the
  loop sends what the socket takes at once and the rest as the client
  reads it, so a client that stops reading never holds up the loop (its
  connection closes after the request timeout without progress);
* queues such a request in the event loop, without a thread, when the
  application says it may (``ServingApp.event_loop_queue``: a /serve or V2
  inference request for a loaded model), and answers it there
  as above once the application says its forward has run
  (or its deadline passed); a thread per request, handing its call to a
  native thread and waking when it ends, cost more than the work around
  the forward (docs/performance.md);
* reads such a request in the event loop too when the application says it
  takes a thread (a model not loaded yet, a larger body): the thread
  makes the answer from what the loop read, and the loop sends it as
  above. Gunicorn's parser reading it again in the thread cost a request
  through a thread a fifth of its rate (docs/performance.md);
* closes a connection without waiting in the event loop for its client
  to close too (gunicorn's graceful close waits up to 2 s there);
* leaves a new connection for a moment to a sibling worker that holds
  fewer connections (``torch_serving.connection_table``): every worker
  polls the same listening socket, and without this a burst of keep-alive
  connections often lands mostly on one worker, which serves them on one
  core while its sibling idles;
* closes its listening sockets as it stops, so that new connections are
  refused at once rather than left unanswered in the backlog;
* takes no request before the models ``--preload`` names are loaded;
* answers gunicorn's own refusals (a request line or headers over its limits,
  malformed HTTP) with the JSON error envelope instead of an HTML page.

The CLI passes ``--threads`` as gunicorn's threads, and ``--queue-size``
and ``--timeout`` as the application's ``queue_size`` and ``request_timeout``
(an application without them gets ``Config``'s defaults). No torch is loaded here: gunicorn imports the worker
class in its master.
"""

from __future__ import annotations

import contextlib
import errno
import html
import re
import selectors
import socket
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

import gunicorn
from gunicorn import http, util
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker

from torch_serving.config import Config
from torch_serving.connection_table import ConnectionTable
from torch_serving.envelope import BUSY, RETRY_AFTER, busy_detail, error_body, error_document
from torch_serving.environ import ARRIVED, BODY_SOURCE, DEFERRED, ON_EVENT_LOOP, SEND_CONTINUE, BodyTimeout
from torch_serving.plain_http import HttpDate, PlainReader, PlainRequest, PlainResponse
from torch_serving.shared import mark_grpc_listening, replaced_by_a_reload, successor_listens

__all__ = ["ServingWorker"]

# How long a connection the server closes stays open for the client to read
# its last answer (see ``_linger``).
_LINGER_S = 2.0
_GUNICORN_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ([^\r\n]*)")
_GUNICORN_DETAIL = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.DOTALL)
_UNEXPECTED = "an unexpected error occurred; the server log has the details"
# The most a request answered in the event loop may hold, headers and body.
_PEEK_BYTES = 80 * 1024
# What one read takes off a connection whose headers are still arriving.
_HEAD_CHUNK = 64 * 1024
# How long a worker leaves a new connection to a sibling holding fewer connections before it takes it
# itself (the sibling is busy): the event loop's poll counts in milliseconds.
_ACCEPT_YIELD_S = 0.001

_request = threading.local()

# What this worker relies on in gunicorn beyond its documented surface, checked as each worker starts
# (``gunicorn_gaps``): the gthread worker's methods and state, a connection's, its parser's buffer, and
# its body readers' (``_SocketBody``).
_WORKER_METHODS = (
    "accept",
    "wait_for_and_dispatch_events",
    "enqueue_req",
    "on_client_socket_readable",
    "on_pending_socket_readable",
    "finish_request",
    "handle",
    "handle_request",
    "handle_error",
    "murder_keepalived",
    "set_accept_enabled",
    "init_process",
)
_WORKER_STATE = (
    "keepalived_conns",
    "pending_conns",
    "nr_conns",
    "method_queue",
    "max_keepalived",
    "nr",
    "alive",
    "sockets",
)
_CONNECTION_STATE = ("sock", "client", "server", "parser", "initialized", "data_ready", "is_http2", "timeout")
_BODY_STATE = ("reader", "buf", "failed")
_LENGTH_READER_STATE = ("length", "unreader")
_CHUNKED_METHODS = ("parse_chunk_size",)
_UNREADER_PARTS = ("buf", "unread", "take_buffered")
# Gunicorn's arbiter stops the server when a worker exits with this status.
_WORKER_BOOT_ERROR = 3


def gunicorn_gaps(worker: ThreadWorker) -> list[str]:
    """What ``worker``'s gunicorn lacks of what this module relies on."""
    gaps = [f"ThreadWorker.{name}" for name in _WORKER_METHODS if not callable(getattr(ThreadWorker, name, None))]
    gaps += [f"ThreadWorker().{name}" for name in _WORKER_STATE if not hasattr(worker, name)]
    gaps += [f"ChunkedReader.{name}" for name in _CHUNKED_METHODS if not hasattr(ChunkedReader, name)]
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = TConn(worker.cfg, ours, ("127.0.0.1", 0), ("127.0.0.1", 0))
        gaps += [f"TConn().{name}" for name in _CONNECTION_STATE if not hasattr(conn, name)]
        unreader = getattr(http.get_parser(worker.cfg, ours, ("127.0.0.1", 0)), "unreader", None)
        gaps += [f"RequestParser().unreader.{name}" for name in _UNREADER_PARTS if not hasattr(unreader, name)]
        reader = LengthReader(unreader, 0)
        gaps += [f"LengthReader().{name}" for name in _LENGTH_READER_STATE if not hasattr(reader, name)]
        gaps += [f"Body().{name}" for name in _BODY_STATE if not hasattr(Body(reader), name)]
    return gaps


# The shortest wait for body bytes: a socket timeout of 0 would mean non-blocking.
_MIN_WAIT_S = 0.001


class _SocketBody:
    """The application's ``BodySource`` (``torch_serving.environ``): a request's body read off gunicorn's
    client socket, in place of gunicorn's reader, and reads of gunicorn's reader bounded in time.
    Stateless: one serves every request."""

    @staticmethod
    def _gunicorn_body_and_socket(environ: dict) -> tuple[Body, socket.socket] | None:
        """Gunicorn's body and its blocking client socket, when the request has them."""
        stream, sock = environ.get("wsgi.input"), environ.get("gunicorn.socket")
        if sock is None or not isinstance(stream, Body) or sock.gettimeout() is not None:
            return None
        return stream, sock

    def receive(self, environ: dict, allocate, length: int, deadline: float):
        found = self._gunicorn_body_and_socket(environ)
        if found is None:
            return None
        stream, sock = found
        reader = stream.reader
        if not isinstance(reader, LengthReader) or reader.length != length or stream.buf.tell():
            return None
        # Gunicorn may hold the body's first bytes (read with the headers), and
        # bytes of the next pipelined request after them, which it must keep.
        held = reader.unreader.take_buffered()
        if len(held) > length:
            reader.unreader.unread(held[length:])
            held = held[:length]
        body = allocate(length)
        view = memoryview(body)
        view[: len(held)] = held
        received = len(held)
        try:
            if received < length:  # small bodies came with the headers: no system call
                with self.bounded(environ, deadline) as rearm:
                    while received < length:
                        count = sock.recv_into(view[received:])
                        if count == 0:
                            break
                        received += count
                        rearm()
        except BodyTimeout:
            raise BodyTimeout(received) from None
        finally:
            # Gunicorn must not read this body again: it is consumed, or after an
            # early end, gone.
            reader.length = 0
        return body, received

    @contextlib.contextmanager
    def bounded(self, environ: dict, deadline: float):
        found = self._gunicorn_body_and_socket(environ)
        if found is None:
            yield lambda: None
            return
        stream, sock = found

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
            stream.failed = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
            raise BodyTimeout from None
        finally:
            sock.settimeout(None)

    def limit_chunks(self, environ: dict, limit: int, refuse) -> None:
        stream = environ.get("wsgi.input")
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
                raise refuse(announced)
            return size, rest

        reader.parse_chunk_size = bounded


_SOCKET_BODY = _SocketBody()


class _RequestCount:
    """The requests a worker holds under another WSGI application than ``ServingApp``, whose
    ``torch_serving.Admission`` counts them and says which the event loop answers (torch-free: gunicorn's
    master imports this module). Entered by the event loop, left by whichever thread ends a request."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held = 0

    def enter(self) -> bool:
        with self._lock:
            if self._held >= self.limit:
                return False
            self._held += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._held -= 1


def _http_response(status: int, reason: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _busy_answer(limit: int) -> bytes:
    """The 503 a worker holding ``limit`` requests answers a further one with."""
    return _http_response(503, "Service Unavailable", error_body(503, BUSY, busy_detail(limit)), RETRY_AFTER)


class _CapturedSocket:
    """Stands in for the client socket while gunicorn writes an answer, to be sent as one."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # non-blocking, so gunicorn writes at once

    def sendall(self, data: bytes) -> None:
        self.data += data

    def shutdown(self, how: int) -> None:
        """Gunicorn's end of an answer that broke off: the connection closes after what was written."""

    def close(self) -> None:
        """As ``shutdown``."""


class ServingWorker(ThreadWorker):
    """Gunicorn's gthread worker with a bounded number of requests in flight."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Touched only by the event loop thread (enqueue_req, finish_request).
        self._on_core = 0
        queue_size = getattr(self.app, "queue_size", Config.queue_size)
        self._limit = self.cfg.threads + queue_size  # under another application than ``ServingApp``
        # The requests this worker holds, entered by the event loop and left by the thread that answers
        # them, and the 503 beyond them: set in run, once the application is loaded.
        self._admission: _RequestCount  # or, far more often, the application's torch_serving.Admission
        self._busy_answer: bytes
        # Seconds a client has to send its headers, and to take an answer the loop sends it.
        self._timeout = getattr(self.app, "request_timeout", Config.timeout)
        # Threads start on first use, after the fork.
        self._spare_pool = ThreadPoolExecutor(max(queue_size, 1), thread_name_prefix="spare")
        self._lingering: deque[tuple[float, socket.socket]] = deque()
        # Connections whose headers are arriving, oldest first (each holds them in ``conn.head``).
        self._heading: deque = deque()
        # Connections the loop answered whose client has not taken all of it yet (``conn.unsent``).
        self._sending: list = []
        # What says which requests the loop answers (the application's admission), and the application's
        # queue of requests the loop queues (with those queued, by key), once the app is loaded.
        self._event_loop_route = None
        self._event_loop_queue = None
        self._queued: dict[int, tuple] = {}
        self._grpc = None  # the application's gRPC service, once it listens
        self._grpc_stopper: threading.Thread | None = None  # what stops it, once the worker is told to stop
        self._plain = PlainReader(self.cfg)
        self._http_date = HttpDate()
        # This worker's slot among its siblings' connection counts, once it takes connections (None with
        # one worker, or without the CLI's shared directory); whether it takes them, counting the moments
        # it leaves one to a sibling; and until when it leaves it (accept).
        self._connections: ConnectionTable | None = None
        self._listens = False
        self._accept_resumes: float | None = None
        # Peeked at under TLS, a connection shows records, never headers: gunicorn reads those.
        self._gathers_headers = not self.cfg.is_ssl
        self._peeked = bytearray(_PEEK_BYTES)
        self._head_timeout_answer = _http_response(
            408,
            "Request Timeout",
            error_body(
                408, "Request Timeout", f"the request headers did not arrive within the {self._timeout:g} s timeout"
            ),
            {},
        )

    def init_process(self) -> None:
        # A gunicorn without what this worker relies on would fail inside its event loop, on the first
        # request that reaches the missing part: refuse to start instead, saying what is missing.
        gaps = gunicorn_gaps(self)
        if gaps:
            self.log.critical(
                "torch-serving's worker needs gunicorn 27 (pinned gunicorn>=27,<28); gunicorn %s lacks %s",
                gunicorn.__version__,
                ", ".join(gaps),
            )
            sys.exit(_WORKER_BOOT_ERROR)
        super().init_process()

    def run(self) -> None:
        # Take no request before the application's preload is done, telling
        # the arbiter meanwhile that this worker is alive. Another WSGI
        # application than ``ServingApp`` has none.
        preload = getattr(self.wsgi, "preload", None)
        while preload is not None and not preload.wait(1.0):
            self.notify()
        # The application's own admission, which its gRPC service shares. Under another WSGI application
        # every request takes a thread.
        admission = getattr(self.wsgi, "admission", None)
        if admission is not None:
            self.wsgi.admitted_by_host()
        self._admission = admission if admission is not None else _RequestCount(self._limit)
        self._event_loop_route = None if admission is None else admission.event_loop_route
        self._busy_answer = _busy_answer(self._admission.limit)
        self._event_loop_queue = getattr(self.wsgi, "event_loop_queue", None) if admission is not None else None
        if self._event_loop_queue is not None:
            self.poller.register(self._event_loop_queue, selectors.EVENT_READ, self._answer_queued)
        grpc_service = getattr(self.wsgi, "grpc_service", None)
        # A worker told to stop during its preload never listens: a listener that leaves at once would
        # pass for the successor of the workers a reload replaces.
        if grpc_service is not None and self.alive:
            try:
                grpc_service.start()
            except RuntimeError as error:  # "Failed to bind to address ..."
                self.log.critical("cannot serve gRPC on %s: %s", grpc_service.address, error)
                sys.exit(_WORKER_BOOT_ERROR)
            mark_grpc_listening(self.pid)
            self._grpc = grpc_service
        self.wsgi = self._hosted(self.wsgi)
        if self.cfg.workers > 1:
            self._connections = ConnectionTable.join(self.pid)
        try:
            super().run()
        finally:
            if self._connections is not None:
                self._connections.leave()
        if self._grpc is not None:
            self._begin_stopping_grpc()
            self._grpc_stopper.join()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        # At once, as the HTTP listeners close, rather than once the HTTP requests under way are done.
        self._begin_stopping_grpc()

    def _begin_stopping_grpc(self) -> None:
        # Called in the main thread only (run, and the signal handlers gunicorn runs there).
        if self._grpc is not None and self._grpc_stopper is None:
            self._grpc_stopper = threading.Thread(target=self._stop_grpc, name="grpc-stop", daemon=True)
            self._grpc_stopper.start()

    def _stop_grpc(self) -> None:
        """Refuse new gRPC calls and let those under way finish within the graceful timeout; when a reload
        replaces this worker, first keep listening until a new worker does (``torch_serving.shared``)."""
        deadline = time.monotonic() + self.cfg.graceful_timeout
        if replaced_by_a_reload():
            while not successor_listens(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._grpc.stop(max(deadline - time.monotonic(), 0.0)).wait()

    def _hosted(self, app):
        """``app``, told when the current request arrived, whether it is answered in the event loop and,
        queued there, its ``Deferred`` (``torch_serving.environ``), given the ``100 Continue`` it is owed to send (``SEND_CONTINUE``),
        its answer closing the connection when its body is left unread (never asked for, or its reading
        failed), and releasing the request's admission when it returns its answer."""

        def answer(environ, start_response):
            environ[ARRIVED] = _request.arrived
            model = getattr(_request, "event_loop_model", None)
            if model is not None:
                environ[ON_EVENT_LOOP] = model  # its body is in memory already
                deferred = getattr(_request, "deferred", None)
                if deferred is not None:
                    environ[DEFERRED] = deferred  # and its answer made
            else:
                environ[BODY_SOURCE] = _SOCKET_BODY
            owed = getattr(_request, "owed_continue", None)
            if owed is not None:

                def send_continue() -> None:
                    if _request.owed_continue is not None:
                        _request.owed_continue = None
                        owed.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

                environ[SEND_CONTINUE] = send_continue

            try:
                answered = app(environ, start_response)
            finally:
                self._release(getattr(_request, "conn", None))
            # Gunicorn sends the headers with the first write, after this returns.
            if getattr(_request, "owed_continue", None) is not None or getattr(
                environ.get("wsgi.input"), "failed", False
            ):
                start_response.__self__.force_close()  # gunicorn's Response
            return answered

        return answer

    def handle_request(self, req, conn):
        # Gunicorn would send 100 Continue before the application runs; it is sent when the
        # application reads the body (SEND_CONTINUE), so an answer the headers decide comes without it.
        if not req._expected_100_continue:
            return super().handle_request(req, conn)
        req._expected_100_continue = False
        _request.owed_continue = conn.sock
        try:
            return super().handle_request(req, conn)
        finally:
            _request.owed_continue = None

    def _admit(self, conn) -> bool:
        """Count ``conn``'s request as in flight, unless the worker holds its limit."""
        if not self._admission.enter():
            return False
        conn.admitted = True
        return True

    def _release(self, conn) -> None:
        """Stop counting ``conn``'s request, once: its answer is made, or it ended without one."""
        if conn is not None and getattr(conn, "admitted", False):
            conn.admitted = False
            self._admission.leave()

    def enqueue_req(self, conn) -> None:
        if not conn.initialized and not conn.data_ready:
            # A new connection: it holds no request until its first bytes arrive.
            self._await_first_bytes(conn)
            return
        if not self._admit(conn):
            self._refuse(conn, self._busy_answer)
            return
        conn.arrived = time.monotonic()
        # Gunicorn's handle reads the request there, as its enqueue_req would have it.
        self._run_on_thread(conn, partial(self.handle, conn), self.finish_request)

    def _await_first_bytes(self, conn) -> None:
        """Wait in the event loop, as gunicorn waits for a deferred connection, for ``conn`` to send;
        as long as gunicorn would wait in a thread and then in the loop."""
        conn.timeout = time.monotonic() + DEFAULT_WORKER_DATA_TIMEOUT + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def on_pending_socket_readable(self, conn, client) -> None:
        received = self._peek(conn)
        if received == 0 or (received and not self._headers_in(received)):
            self.poller.unregister(client)
            self.pending_conns.remove(conn)
            self._close_ended(conn) if received == 0 else self._await_headers(conn)
            return
        super().on_pending_socket_readable(conn, client)

    def _peek(self, conn) -> int | None:
        """Peek at what ``conn`` has sent into ``_peeked``: its length, 0 when the client closed, None on error."""
        try:
            return conn.sock.recv_into(self._peeked, _PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return None

    def _headers_in(self, received: int) -> bool:
        """Whether the ``received`` bytes peeked at hold a whole request line and headers (or
        cannot be read as such here)."""
        return not self._gathers_headers or self._peeked.find(b"\r\n\r\n", 0, received) >= 0

    def _await_headers(self, conn) -> None:
        """Gather ``conn``'s request line and headers in the event loop, which answers 408 should they
        not be all there within the timeout: a thread would wait for them without a bound, and a few
        clients that never finish would hold every request slot."""
        conn.head = bytearray()
        conn.head_deadline = time.monotonic() + self._timeout
        self._heading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _on_head_readable(self, conn, client) -> None:
        try:
            data = conn.sock.recv(_HEAD_CHUNK, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        searched_from = max(len(conn.head) - 3, 0)
        conn.head += data
        if data and conn.head.find(b"\r\n\r\n", searched_from) < 0 and len(conn.head) <= self._plain.head_limit:
            return
        self.poller.unregister(client)
        self._heading.remove(conn)
        if not data:
            self._close_ended(conn)
            return
        # Gunicorn's parser reads the request from the bytes gathered; past its limits, it refuses it.
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(conn.head))
        conn.head = None
        conn.data_ready = True
        self.enqueue_req(conn)

    def _close_ended(self, conn) -> None:
        """Close a connection whose client closed it without a request: it never held one."""
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn, fs) -> None:
        if conn.on_core:
            self._on_core -= 1
        try:
            kept = not fs.cancelled() and fs.result()
        except Exception:
            kept = False
        if kept:
            super().finish_request(conn, fs)
            return
        # Gunicorn would close gracefully in the event loop, waiting up to 2 s for the client to close.
        self.nr_conns -= 1
        self._linger(conn.sock)

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
        if received == 0 or (received and not self._headers_in(received)):
            self.poller.unregister(client)
            self.keepalived_conns.remove(conn)
            self._close_ended(conn) if received == 0 else self._await_headers(conn)
            return
        found = self._plain_request(conn, received) if received else None
        if found is None or not self._admit(conn):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        conn.arrived = time.monotonic()
        request, model, queued = found
        conn.on_core = False
        try:
            taken = self._take(conn, request)
        except OSError as error:
            self._socket_error(conn, error)
            taken = False
        if not taken:
            self._release(conn)
            self.finish_request(conn, _Finished(False))
        elif queued is not None:
            self._queue(conn, request, queued)
        elif model is None:
            # The request takes a thread, as gunicorn's own would, but is not read a second time there.
            self._run_on_thread(conn, partial(self._answer_held, conn, request, None), self._answered_on_thread)
        else:
            self._send(conn, *self._answer_held(conn, request, model))

    def _plain_request(self, conn, received: int) -> tuple[PlainRequest, str | None, object] | None:
        """The next request on kept-alive ``conn``, of which ``received`` bytes were peeked at, when it is
        plain, all in the socket, and gunicorn would keep the connection open after it, with the model
        file the event loop answers it from, or how the loop queues it (the application's ``Queueable``),
        None for both when it takes a thread; else None. Reads nothing."""
        if (
            self._event_loop_route is None
            or conn.is_http2
            or conn.parser.unreader.buf.tell()
            or not self.alive
            or not self.cfg.keepalive
            or self.nr + 1 >= self.max_requests
            or len(self.keepalived_conns) > self.max_keepalived  # counting ``conn``, about to leave it
        ):
            return None
        request = self._plain.read(self._peeked, received)
        if request is None:
            return None
        body_size = request.size - request.body_start
        route = self._event_loop_route(request.method, request.uri, body_size)
        model = queued = None
        if route is not None:
            if route[2] == "answer":
                model = route[0]
            elif self._event_loop_queue is not None:
                queued = self._event_loop_queue.take(route, request.headers, body_size)
        return request, model, queued

    def _take(self, conn, request: PlainRequest) -> bool:
        """Take ``request``'s bytes, peeked at and all there, off ``conn``'s socket, keeping its body."""
        if conn.sock.recv_into(self._peeked, request.size, socket.MSG_DONTWAIT) != request.size:
            return False
        request.received(memoryview(self._peeked))
        return True

    def _answer(self, conn, request: PlainRequest) -> tuple[bytes, bool]:
        """Make the answer to ``request``, taken off ``conn``, as gunicorn's ``handle_request`` makes it
        (its hooks, its environ and response for a plain request, its access line and its limits on the
        requests a worker and its kept-alive connections take), without sending it; return it and whether
        ``conn`` stays open after it. An error is answered as gunicorn's ``handle`` answers it."""
        try:
            return self._answer_plain(request, conn.client, conn.server)
        except Exception as error:
            captured = _CapturedSocket()
            self.handle_error(request, captured, conn.client, error)
            return captured.data, False

    def _answer_plain(self, request: PlainRequest, client, server) -> tuple[bytes, bool]:
        """Gunicorn's ``handle_request`` for a plain request on a connection from ``client`` to ``server``,
        returning the answer and whether the connection stays open after it."""
        response = PlainResponse(self._http_date(), request.method)
        environ: dict = {}
        try:
            self.cfg.pre_request(self, request)
            started = datetime.now()
            environ = self._plain.environ(request, client, server)
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                response.force_close()
            if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
                response.force_close()
            chunks = self.wsgi(environ, response.start_response)
            try:
                answer = response.answer(chunks)
            finally:
                self.log.access(response, request, environ, datetime.now() - started)
                if hasattr(chunks, "close"):
                    chunks.close()
            return answer, not response.should_close()
        finally:
            try:
                self.cfg.post_request(self, request, environ, response)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def _socket_error(self, conn, error: OSError) -> None:
        """Log, as gunicorn's ``handle`` does, a socket error met while reading or answering ``conn``."""
        if error.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
            self.log.debug("connection of %s ended while answering it: %s", conn.client, error)
        else:
            self.log.exception("Socket error processing request.")

    def _run_on_thread(self, conn, work, then) -> None:
        """Run ``work`` on a core thread while one is free, else on a spare one; then ``then(conn, future)``
        in the event loop."""
        conn.on_core = self._on_core < self.cfg.threads
        if conn.on_core:
            self._on_core += 1
        future = (self.tpool if conn.on_core else self._spare_pool).submit(work)
        future.add_done_callback(lambda done: self.method_queue.defer(then, conn, done))

    def _answer_held(self, conn, request: PlainRequest, model: str | None) -> tuple[bytes, bool]:
        """``_answer``, with what the application reads of the request set for this thread (when it
        arrived; the model file the event loop answers it from, None on another thread), and the
        request's admission released once the answer is made."""
        _request.arrived = conn.arrived
        _request.event_loop_model = model
        _request.conn = conn
        try:
            return self._answer(conn, request)
        finally:
            _request.event_loop_model = None
            _request.conn = None
            self._release(conn)

    def _queue(self, conn, request: PlainRequest, queueable) -> None:
        """Queue ``request``, taken off ``conn``, in the application's event-loop queue as ``queueable`` says;
        it is answered once its batch has run (``_answer_queued``)."""
        try:
            key, deferred = self._event_loop_queue.submit(queueable, request.body.getvalue(), conn.arrived)
        except Exception:  # the queue reports a request's own errors in its answer: this is the worker's
            self.log.exception("Error queueing a request.")
            self._release(conn)
            self.finish_request(conn, _Finished(False))
            return
        # ``ready`` gives the key in this thread, later.
        self._queued[key] = (conn, request, queueable.model, deferred)

    def _answer_queued(self, _fileobj) -> None:
        """Answer, in the event loop, the queued requests whose batch has run."""
        for key in self._event_loop_queue.ready():
            conn, request, model, deferred = self._queued.pop(key)
            _request.deferred = deferred
            try:
                answer = self._answer_held(conn, request, model)
            finally:
                _request.deferred = None
            self._send(conn, *answer)

    def _answered_on_thread(self, conn, future) -> None:
        """Send, from the event loop, the answer a thread made (``_answer_held``)."""
        try:
            answer, kept = future.result()
        except Exception:  # _answer handles the application's errors: this is the worker's own
            self.log.exception("Error answering a request on a thread.")
            answer, kept = b"", False
        self._send(conn, answer, kept)

    def _send(self, conn, answer: bytes, kept: bool) -> None:
        """Send ``answer`` on ``conn`` from the event loop, which never waits on a client: what the socket
        does not take at once goes out as the client reads, and ``kept`` says what follows."""
        try:
            sent = conn.sock.send(answer, socket.MSG_DONTWAIT) if answer else 0
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self.log.debug("connection of %s ended while answering it: %s", conn.client, error)
            self.finish_request(conn, _Finished(False))
            return
        if sent == len(answer):
            self.finish_request(conn, _Finished(kept))
            return
        conn.unsent = memoryview(answer)[sent:]
        conn.kept = kept
        conn.send_deadline = time.monotonic() + self._timeout
        self._sending.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_WRITE, partial(self._on_writable, conn))

    def _on_writable(self, conn, client) -> None:
        try:
            sent = conn.sock.send(conn.unsent, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as error:
            self.log.debug("connection of %s ended while answering it: %s", conn.client, error)
            sent, conn.kept = len(conn.unsent), False
        conn.unsent = conn.unsent[sent:]
        conn.send_deadline = time.monotonic() + self._timeout
        if conn.unsent:
            return
        self.poller.unregister(client)
        self._sending.remove(conn)
        conn.unsent = None
        self.finish_request(conn, _Finished(conn.kept))

    def _refuse(self, conn, answer: bytes) -> None:
        """Send ``answer`` and close, from the event loop, without a thread."""
        self.nr_conns -= 1
        sock = conn.sock
        try:
            sock.setblocking(False)
            _discard_readable(sock)
            sock.send(answer)
        except OSError:
            util.close(sock)
            return
        self._linger(sock)

    def _linger(self, sock: socket.socket) -> None:
        """Close ``sock`` once its client has closed it too, or after a while, from the event loop: closing
        with its bytes unread would reset the connection and could lose the answer sent."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            util.close(sock)
            return
        self._lingering.append((time.monotonic() + _LINGER_S, sock))
        self.poller.register(sock, selectors.EVENT_READ, partial(self._on_lingering_readable, sock))

    def _on_lingering_readable(self, sock: socket.socket, _fileobj) -> None:
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
        # Runs on every turn of the event loop: also end the waits of this
        # worker's own, past their time.
        super().murder_keepalived(force)
        now = time.monotonic()
        while self._lingering and (force or self._lingering[0][0] <= now):
            _, sock = self._lingering.popleft()
            if sock.fileno() >= 0:
                self._close_lingering(sock)
        while self._heading and (force or self._heading[0].head_deadline <= now):
            conn = self._heading.popleft()
            self.poller.unregister(conn.sock)
            self._refuse(conn, self._head_timeout_answer)
        for conn in [conn for conn in self._sending if force or conn.send_deadline <= now]:
            self._sending.remove(conn)
            self.poller.unregister(conn.sock)
            self.log.warning(
                "closed the connection of %s, which took none of its answer for %g s", conn.client, self._timeout
            )
            self.nr_conns -= 1
            util.close(conn.sock)

    def accept(self, listener) -> None:
        # A sibling holding fewer connections polls the same listener: leave it this connection for a
        # moment (it stays on the worker that takes it as long as it is kept alive).
        if self._connections is not None and self._connections.fewer_elsewhere(self.nr_conns):
            self._accept_resumes = time.monotonic() + _ACCEPT_YIELD_S
            super().set_accept_enabled(False)
            return
        super().accept(listener)
        if self._connections is not None:
            self._connections.publish(self.nr_conns)

    def _take_waiting_connection(self) -> None:
        """Listen again after leaving a connection to a sibling, and take the connection if it still
        waits: the sibling is busy."""
        self._accept_resumes = None
        self.set_accept_enabled(True)
        for listener in self.sockets:
            super().accept(listener)  # nothing when the sibling took it
        self._connections.publish(self.nr_conns)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._connections is not None:
            if self._accept_resumes is not None and self.alive:
                left = self._accept_resumes - time.monotonic()
                if left > 0:
                    timeout = min(timeout, left)
                else:
                    self._take_waiting_connection()
            self._connections.publish(self.nr_conns if self._listens else None)
        super().wait_for_and_dispatch_events(timeout)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and self._accept_resumes is not None:
            return  # the connection is left to a sibling until then (accept)
        self._accept_resumes = None
        self._listens = enabled
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # Stopping: once every process has closed the listening sockets, a new connection is
            # refused at once instead of waiting, unanswered, in their backlog.
            for listener in self.sockets:
                listener.close()

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
