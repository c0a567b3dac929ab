"""Quick requests on kept-alive connections, answered in the worker's event
loop, through real gunicorn: they do not wait for threads or native slots
held by long requests, their answers and access lines are those a thread
gives, a model whose request ran long there moves to threads, and a client
that stops reading its answer holds the loop up for a bounded time only.
Other requests the loop reads and a thread answers get the answers and
access lines of gunicorn's own reading."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import socket
import sys
import time

import pytest
import requests
import torch

from tests.conftest import WARM_UP_ROUNDS, body_of, rounds_body, tensor_json
from tests.integration.server import free_port, running
from tests.models import AffineModel, BatchLinearModel, WideModel, script_and_save

TINY_BODY = body_of(tensor_json(torch.tensor([1.0, 2.0])))


def post(connection: http.client.HTTPConnection, identifier: str, body: bytes) -> tuple[int, dict]:
    """POST /serve on a kept-alive connection; return the status and the JSON answer."""
    connection.request("POST", f"/serve?servable_identifier={identifier}", body=body)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_a_quick_request_is_answered_while_the_only_thread_runs_a_long_one(start):
    with start("--threads", "1", "--timeout", "60") as server:
        assert_answered_while_the_only_thread_is_held(server.port)


def test_the_event_loop_answers_quick_requests_under_plain_gunicorn_too(model_root, tmp_path):
    with plain_gunicorn(model_root, tmp_path) as server:
        assert_answered_while_the_only_thread_is_held(server.port)


@contextlib.contextmanager
def plain_gunicorn(model_root, tmp_path, *options: str):
    """Run gunicorn with the worker class and ``torch_serving.wsgi:app`` with one thread and ``options``, as
    a user without the CLI runs them, on a free port."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "gunicorn", "-k", "torch_serving.worker.ServingWorker", *options),
        *("--threads", "1", "--no-control-socket", "-b", f"127.0.0.1:{port}", "torch_serving.wsgi:app"),
    ]
    env = {"TORCH_SERVING_MODEL_ROOT": str(model_root), "TORCH_SERVING_THREADS": "1"}
    with running(command, port, tmp_path / "log", env=env) as server:
        yield server


def test_gunicorns_hooks_run_around_answers_made_in_the_event_loop(model_root, tmp_path):
    calls = tmp_path / "calls"
    hooks = tmp_path / "hooks.py"
    hooks.write_text(
        "import threading\n"
        "def pre_request(worker, req):\n"
        f"    with open({str(calls)!r}, 'a') as f:\n"
        "        f.write(f'pre {threading.current_thread().name} {req.method} {req.path}\\n')\n"
        "def post_request(worker, req, environ, resp):\n"
        f"    with open({str(calls)!r}, 'a') as f:\n"
        "        name, path = threading.current_thread().name, environ['PATH_INFO']\n"
        "        f.write(f'post {name} {req.path} {resp.status} {path}\\n')\n"
    )
    with plain_gunicorn(model_root, tmp_path, "-c", str(hooks)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as kept:
            for _ in range(30):  # loaded, and its typical forward a short one
                exchange(kept, serve_request("tiny.pt", TINY_BODY))
            calls.unlink()
            answer = exchange(kept, serve_request("tiny.pt", TINY_BODY))
            bad = exchange(kept, serve_request("tiny.pt", b"[1,"))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and bad.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    # Both answered by the worker's main thread (its event loop), each between its two hooks.
    assert calls.read_text().splitlines() == [
        "pre MainThread POST /serve",
        "post MainThread /serve 200 OK /serve",
        "pre MainThread POST /serve",
        "post MainThread /serve 400 Bad Request /serve",
    ]


def test_answers_made_in_the_event_loop_count_toward_gunicorns_max_requests(model_root, tmp_path):
    with plain_gunicorn(model_root, tmp_path, "--max-requests", "40") as server:
        (worker,) = server.workers()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as kept:
            # The first request of the connection and the health check's take a thread; the rest the loop answers.
            answers = [exchange(kept, serve_request("tiny.pt", TINY_BODY)) for _ in range(39)]
            assert kept.recv(1) == b""  # closed after the worker's 40th request
        assert [b"Connection: close" in answer for answer in answers] == [False] * 38 + [True]
        assert server.wait_for_log("Autorestarting worker after current request.")
        deadline = time.monotonic() + 30
        while worker in server.workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker not in server.workers()  # it exited, and gunicorn starts another


def test_a_request_saying_connection_keep_alive_is_answered_in_the_event_loop(start):
    # As Python's requests sends it (in one write here: requests writes its body apart from its
    # headers, and a body not there yet when the loop looks takes a thread).
    session_headers = requests.Session().headers
    headers = "".join(f"{name}: {value}\r\n" for name, value in session_headers.items()).encode()
    assert b"Connection: keep-alive\r\n" in headers
    head = b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
    request = head % (headers, len(TINY_BODY)) + TINY_BODY
    with start("--threads", "1", "--timeout", "60") as server:
        (worker,) = server.workers()
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=60) as kept,
            socket.create_connection(("127.0.0.1", server.port), timeout=60) as other,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            for _ in range(30):  # loaded, and its typical forward a short one
                assert answer_value(exchange(kept, request)) == (b"HTTP/1.1 200 OK", [3, 5])
            # The first request of its connection: gunicorn reads it, on the worker's only core thread.
            long_request = pool.submit(exchange, other, serve_request("slow.pt", rounds_body(6000)))
            time.sleep(0.5)
            threads = thread_count(worker)
            for _ in range(20):
                assert answer_value(exchange(kept, request)) == (b"HTTP/1.1 200 OK", [3, 5])
            # None took a thread: on one, they would have started a spare thread.
            assert thread_count(worker) == threads
            assert not long_request.done()
            assert long_request.result().startswith(b"HTTP/1.1 200 OK")


def assert_answered_while_the_only_thread_is_held(port: int) -> None:
    """Check that, while a long request holds a one-thread worker's thread and native slot, a quick
    request on a kept-alive connection is answered within a second, from the event loop."""
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        post(other, "slow.pt", rounds_body(WARM_UP_ROUNDS))
        for _ in range(30):  # loaded, and its typical forward a short one
            assert post(kept, "tiny.pt", TINY_BODY)[0] == 200
        # On a connection of its own the long request is read by gunicorn, on the worker's only thread
        # (on a kept-alive one the loop would queue it, holding no thread).
        other.close()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            long_request = pool.submit(post, other, "slow.pt", rounds_body(6000))
            time.sleep(0.5)  # it holds the worker's only thread and native slot
            started = time.monotonic()
            status, answer = post(kept, "tiny.pt", TINY_BODY)
            answered_s = time.monotonic() - started
            assert not long_request.done()
            assert long_request.result()[0] == 200
        assert (status, answer["result"]["value"]) == (200, [3, 5])
        assert answered_s < 1.0
    finally:
        kept.close()
        other.close()


def test_an_answer_from_the_event_loop_is_the_one_a_thread_gives(start):
    requests = [
        serve_request("tiny.pt", TINY_BODY),
        serve_request("tiny.pt", b'{"inputs": ['),  # 400, with the exact detail
        serve_request("tiny.pt", body_of(tensor_json(torch.tensor([1, 2], dtype=torch.int8)))),  # from the model
    ]
    with start("--threads", "1", "--timeout", "60", "--log-level", "info") as server:
        threaded = []
        for request in requests:  # each the first on its connection: a thread reads it
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as fresh:
                threaded.append(exchange(fresh, request))
        other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            post(other, "slow.pt", rounds_body(WARM_UP_ROUNDS))
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as kept:
                for _ in range(30):  # loaded, and its typical forward a short one
                    exchange(kept, requests[0])
                other.close()  # a connection of its own, which gunicorn reads on the only thread
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    long_request = pool.submit(post, other, "slow.pt", rounds_body(6000))
                    time.sleep(0.5)  # it holds the worker's only thread: the loop answers what follows
                    in_loop = [exchange(kept, request) for request in requests]
                    assert not long_request.done()
                    assert long_request.result()[0] == 200
        finally:
            other.close()
        log = server.log()
    assert_same_answers(in_loop, threaded, [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 200 OK"])
    statuses_and_sizes = access_lines(log, "tiny.pt")
    expected = [access_line_of(answer) for answer in threaded]
    # A thread logs its line after sending the answer, so the next request's line (on another thread) may come first.
    assert sorted(statuses_and_sizes[: len(requests)]) == sorted(expected)  # the threads' lines
    assert statuses_and_sizes[-len(requests) :] == expected  # the loop's, in order: one loop answers them


def test_pipelined_quick_requests_each_get_their_own_answer_from_the_loop(start):
    bodies = [body_of(tensor_json(torch.tensor([float(i)]))) for i in range(3)]
    with start("--threads", "1", "--timeout", "60") as server:
        other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            post(other, "slow.pt", rounds_body(WARM_UP_ROUNDS))
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as kept:
                for _ in range(30):  # loaded, and its typical forward a short one
                    exchange(kept, serve_request("tiny.pt", TINY_BODY))
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    long_request = pool.submit(post, other, "slow.pt", rounds_body(6000))
                    time.sleep(0.5)  # it holds the worker's only thread: the loop answers what follows
                    kept.sendall(b"".join(serve_request("tiny.pt", body) for body in bodies))  # in one segment
                    answers = read_answers(kept, len(bodies))
                    assert not long_request.done()
                    assert long_request.result()[0] == 200
        finally:
            other.close()
    values = [json.loads(answer.partition(b"\r\n\r\n")[2])["result"]["value"] for answer in answers]
    assert values == [[1], [3], [5]]


def test_a_request_the_loop_reads_for_a_thread_gets_the_answer_gunicorns_reading_gives(start):
    # A query with invalidation_prob is neither answered nor queued in the loop (it may reload the
    # model): on a kept-alive connection the loop reads such plain requests and a thread answers them;
    # the first request of a connection gunicorn reads.
    target = "batch_linear_eager.pt&invalidation_prob=0"
    rows = [body_of(tensor_json(torch.tensor([[float(i), 1.0, 2.0, 3.0]]))) for i in range(3)]
    requests = [
        serve_request(target, rows[0]),
        serve_request(target, b'{"inputs": ['),  # 400, with the exact detail
        serve_request(target, body_of(tensor_json(torch.ones(1, 5)))),  # from the model
    ]
    with start("--threads", "1", "--timeout", "60", "--log-level", "info") as server:
        threaded = []
        for request in requests:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as fresh:
                threaded.append(exchange(fresh, request))
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as kept:
            exchange(kept, requests[0])  # the connection's first: gunicorn reads it
            read_by_loop = [exchange(kept, request) for request in requests]
            kept.sendall(b"".join(serve_request(target, row) for row in rows))  # in one segment
            pipelined = read_answers(kept, len(rows))
        log = server.log()
    assert_same_answers(
        read_by_loop, threaded, [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 Bad Request"]
    )
    values = [json.loads(answer.partition(b"\r\n\r\n")[2])["result"]["value"] for answer in pipelined]
    expected = BatchLinearModel()(torch.tensor([[float(i), 1.0, 2.0, 3.0] for i in range(3)]))
    assert torch.allclose(torch.tensor(values), expected.reshape(3, 1, 3).squeeze(1), rtol=1e-5)
    # After the threads' lines and the connection's first: the lines of those the loop read, in order.
    lines = access_lines(log, target)
    assert lines[len(requests) + 1 : 2 * len(requests) + 1] == [access_line_of(answer) for answer in threaded]


def test_a_model_whose_request_ran_long_in_the_event_loop_moves_to_threads(start):
    with start("--threads", "2") as server:
        kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            # Each long request follows enough short ones for the model's
            # typical time to be a short one's, so one of them runs in the loop.
            for _ in range(3):
                for _ in range(60):
                    assert post(kept, "looping.pt", rounds_body(0))[0] == 200
                status, answer = post(kept, "looping.pt", rounds_body(50_000))  # a good part of a second
                assert (status, answer["result"]["value"]) == (200, [2])
        finally:
            kept.close()
        time.sleep(0.5)
        log = server.log()
        assert log.count("a request for looping.pt took") == 1
        assert (
            "ms in a worker's event loop, over its 20 ms; this worker answers the model's requests"
            " on threads from now on" in log
        )


# A quick model's answer the loop makes at once; a batching one's once its batch has run (the loop sends both).
@pytest.mark.parametrize("wide", ["wide.pt", "wide_batching.pt"])
def test_a_client_that_stops_reading_never_holds_the_event_loop(start, tmp_path, wide):
    root = tmp_path / "models"
    root.mkdir()
    script_and_save(AffineModel(), root / "tiny.pt")
    script_and_save(WideModel(), root / "wide.pt")
    script_and_save(WideModel(), root / "wide_batching.pt", '{"max_batch_size": 8}')
    body = body_of(tensor_json(torch.tensor([1.0])))
    with start("--threads", "2", "--timeout", "3", root=root) as server:
        warm = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for _ in range(30):  # loaded, and its typical forward a short one
                assert post(warm, wide, body)[0] == 200
        finally:
            warm.close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as stalled:
            stalled.sendall(serve_request("tiny.pt", body))
            received = b""
            while not received.endswith(b"]}}"):
                received += stalled.recv(65536)
            # Each answer (about a megabyte) is sent from the loop and never
            # read: the socket's buffers fill, and the rest waits for the client.
            for _ in range(10):
                stalled.sendall(serve_request(wide, body))
                time.sleep(0.2)
            started = time.monotonic()
            other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                other.request("GET", "/healthcheck")
                assert other.getresponse().status == 200
            finally:
                other.close()
            assert time.monotonic() - started < 1
            # After --timeout without progress, the connection is closed.
            assert server.wait_for_log("which took none of its answer for 3 s", timeout_s=6)
            assert stalled.recv(1 << 24)  # what the socket held is still there
        log = server.log()
        # The answers went out from the loop (a long one would have moved the model to threads).
        assert f"{wide} took" not in log
        assert re.search(
            r"\[WARNING\] closed the connection of \('127\.0\.0\.1', \d+\), which took none of its answer for 3 s", log
        )


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request`` on ``sock`` and return its whole answer."""
    sock.sendall(request)
    [answer] = read_answers(sock, 1)
    return answer


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` whole answers from ``sock``, each up to its Content-Length, and nothing after them."""
    answers, received = [], b""
    while len(answers) < count:
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        answers.append(head + b"\r\n\r\n" + rest[:length])
        received = rest[length:]
    assert received == b""
    return answers


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", answer)


def assert_same_answers(answers: list[bytes], reference: list[bytes], status_lines: list[bytes]) -> None:
    """Check that ``answers`` are ``reference``'s but for their Date headers, with these status lines."""
    assert [without_date(answer) for answer in answers] == [without_date(answer) for answer in reference]
    assert [answer.split(b"\r\n")[0] for answer in answers] == status_lines


def access_lines(log: str, identifier: str) -> list[tuple[int, int]]:
    """The status and body size of each access line of ``POST /serve`` for ``identifier``, in order."""
    pattern = rf'127\.0\.0\.1 "POST /serve\?servable_identifier={re.escape(identifier)} HTTP/1\.1" (\d+) (\d+) [\d.]+ms'
    return [(int(status), int(size)) for status, size in re.findall(pattern, log)]


def access_line_of(answer: bytes) -> tuple[int, int]:
    """The status and body size the access line of ``answer`` gives."""
    return int(answer.split(b" ")[1]), len(answer.split(b"\r\n\r\n", 1)[1])


def serve_request(identifier: str, body: bytes) -> bytes:
    head = b"POST /serve?servable_identifier=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    return head % (identifier.encode(), len(body)) + body


# Batching models: their requests on kept-alive connections are queued in the event loop, without a thread
# each, and answered there once their batch has run (torch_serving.event_loop_queue).


def executions(connection: http.client.HTTPConnection, identifier: str) -> int:
    connection.request("GET", "/cache")
    return json.loads(connection.getresponse().read())["stats"]["models"][identifier]["executions"]


def wait_for_executions(connection: http.client.HTTPConnection, identifier: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while executions(connection, identifier) < count:
        assert time.monotonic() < deadline, f"{identifier} never reached {count} executions"
        time.sleep(0.01)


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def slow_rows(x: torch.Tensor, rounds: int) -> bytes:
    """A /serve request for batch_slow.pt, in one piece (a client that sends its body after its headers
    may find the loop with only the headers, which then leaves the request to a thread)."""
    return serve_request("batch_slow.pt", body_of(tensor_json(x), {"type": "scalar", "value": rounds}))


def answer_value(answer: bytes) -> tuple[bytes, list]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)["result"]["value"]


def test_queued_requests_for_a_batching_model_share_one_forward_each_with_its_own_rows(start):
    with start("--threads", "1") as server:
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(8)]
        try:
            for sock in sockets:
                for _ in range(2):  # the second is queued, which starts the model's native threads
                    exchange(sock, slow_rows(torch.tensor([0.0]), 1))
            # One connection for the counters, kept alive: a fresh one's request may find the only thread
            # not yet back from the one before, and start a spare one.
            counters = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            ran = executions(counters, "batch_slow.pt")
            (worker,) = server.workers()
            threads = thread_count(worker)
            leader, *others = sockets
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                first = pool.submit(exchange, leader, slow_rows(torch.tensor([-1.0]), 3000))
                wait_for_executions(counters, "batch_slow.pt", ran + 1)  # its forward under way
                inputs = [torch.tensor([float(k)]) for k in range(len(others))]
                answers = list(pool.map(lambda sock, x: exchange(sock, slow_rows(x, 1)), others, inputs))
                assert answer_value(first.result()) == (b"HTTP/1.1 200 OK", [0.0])
            # Seven requests on a worker of one thread, queued behind the forward, share the next one.
            for x, answer in zip(inputs, answers, strict=True):
                assert answer_value(answer) == (b"HTTP/1.1 200 OK", (x + 1).tolist())
            assert executions(counters, "batch_slow.pt") == ran + 2
            # No thread carried them: on threads, seven requests at once would have started spare ones.
            assert thread_count(worker) == threads
        finally:
            for sock in sockets:
                sock.close()


def test_queued_requests_past_their_deadline_get_504_then_while_a_forward_runs_on(start):
    with start("--timeout", "1") as server:
        ahead, queued = (socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(2))
        with ahead, queued:
            for sock in (ahead, queued):
                for _ in range(2):
                    exchange(sock, slow_rows(torch.tensor([1.0]), 1))
            counters = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            ran = executions(counters, "batch_slow.pt")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                # Well past the deadline here (8000 rounds took about 2 s on a slow machine).
                sent = time.monotonic()
                long = pool.submit(exchange, ahead, slow_rows(torch.tensor([1.0]), 16000))
                wait_for_executions(counters, "batch_slow.pt", ran + 1)
                answer = exchange(queued, slow_rows(torch.tensor([1.0]), 1))
                # Both at their deadline: the one queued behind the forward, and the one in it, which
                # cannot be abandoned but need not be waited for.
                ahead_answer = long.result()
                waited = time.monotonic() - sent
        for got in (answer, ahead_answer):
            status_line, _, rest = got.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 504 Gateway Timeout"
            detail = json.loads(rest.partition(b"\r\n\r\n")[2])["detail"]
            assert detail == "the request did not finish within the 1 s deadline; its work was abandoned"
        assert waited < 2.0  # the deadline, plus this machine's scheduling: not the forward's 3 s or so
        # The queued one's forward never ran; the server serves the next request once the long forward
        # has ended (the model's only instance runs it meanwhile).
        counters.close()  # idle through the long forward, it may have passed the keep-alive timeout
        assert executions(counters, "batch_slow.pt") == ran + 1
        deadline = time.monotonic() + 60
        while post(counters, "batch_slow.pt", rounds_body(1))[0] != 200:
            assert time.monotonic() < deadline


def test_a_request_for_a_model_that_does_not_batch_is_queued_too(start):
    with start("--threads", "1", "--timeout", "1") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as kept:
            request = serve_request("slow.pt", rounds_body(WARM_UP_ROUNDS))
            for _ in range(2):  # the second is queued, which starts the model's native threads
                assert answer_value(exchange(kept, request)) == (b"HTTP/1.1 200 OK", [2.0])
            (worker,) = server.workers()
            threads = thread_count(worker)
            assert answer_value(exchange(kept, request)) == (b"HTTP/1.1 200 OK", [2.0])
            started = time.monotonic()
            late = exchange(kept, serve_request("slow.pt", rounds_body(16000)))
            assert late.startswith(b"HTTP/1.1 504 ")
            assert time.monotonic() - started < 2.0  # at the deadline, the forward running on
            assert thread_count(worker) == threads
            # Unloaded while that forward runs on, which nothing holds the model for any more: the
            # model waits for it, and the server serves the next request from a new load.
            unload = b"POST /v2/repository/models/slow/unload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            assert exchange(kept, unload).startswith(b"HTTP/1.1 200 OK")
            deadline = time.monotonic() + 60
            while not exchange(kept, request).startswith(b"HTTP/1.1 200 OK"):
                assert time.monotonic() < deadline


def test_a_model_unloaded_under_a_queued_request_never_holds_up_the_event_loop(start):
    with start("--threads", "1", "--timeout", "1") as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=60) as kept,
            socket.create_connection(("127.0.0.1", server.port), timeout=60) as other,
        ):
            request = serve_request("slow.pt", rounds_body(WARM_UP_ROUNDS))
            for _ in range(2):  # the second is queued, which starts the model's native threads
                assert answer_value(exchange(kept, request)) == (b"HTTP/1.1 200 OK", [2.0])
            started = time.monotonic()
            kept.sendall(serve_request("slow.pt", rounds_body(16000)))  # queued: seconds of forward
            time.sleep(0.3)  # its forward runs
            # Unloaded meanwhile: the queued request holds the model's last reference, and drops it
            # when it is answered, at its deadline, while the forward runs on.
            unload = b"POST /v2/repository/models/slow/unload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            assert exchange(other, unload).startswith(b"HTTP/1.1 200 OK")
            [late] = read_answers(kept, 1)
            answered_s = time.monotonic() - started
            assert late.startswith(b"HTTP/1.1 504 ")
            # The model waits for its forward to end where that holds up no one.
            assert answered_s < 2.0
            assert answer_value(exchange(other, request)) == (b"HTTP/1.1 200 OK", [2.0])  # loaded again
            assert time.monotonic() - started < 2.5


def test_a_queued_request_with_a_bad_body_gets_the_error_a_thread_gives(start):
    with start() as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as kept:
            for _ in range(2):
                exchange(kept, slow_rows(torch.tensor([1.0]), 1))
            queued = exchange(kept, serve_request("batch_slow.pt", b"[1,"))
            assert answer_value(exchange(kept, slow_rows(torch.tensor([1.0]), 1))) == (b"HTTP/1.1 200 OK", [2.0])
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as fresh:
            threaded = exchange(fresh, serve_request("batch_slow.pt", b"[1,"))  # read by gunicorn, on a thread
        assert_same_answers([queued], [threaded], [b"HTTP/1.1 400 Bad Request"])


def test_an_answer_to_a_queued_request_is_the_one_a_thread_gives(start):
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    v2_json = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.flatten().tolist()}]})
    header = json.dumps(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}],
            "outputs": [{"name": "OUTPUT__0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    infer = b"POST /v2/models/batch_linear_eager/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
    requests = [
        serve_request("batch_linear_eager.pt", body_of(tensor_json(x))),
        serve_request("batch_linear_eager.pt", b"[1,"),  # 400, with the exact detail
        infer % (len(v2_json), b"") + v2_json.encode(),
        infer % (len(header) + 16, b"Inference-Header-Content-Length: %d\r\n" % len(header))
        + header
        + x.numpy().tobytes(),
        infer % (len(v2_json), b"") + v2_json.replace("[1, 4]", "[1, 5]").encode(),  # 400: its data is 4 values
    ]
    with start("--threads", "1") as server:
        threaded = []
        for request in requests:  # each the first on its connection: a thread reads it
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as fresh:
                threaded.append(exchange(fresh, request))
        (worker,) = server.workers()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as kept:
            for _ in range(2):  # the second is queued, which starts the model's native threads
                exchange(kept, requests[0])
            threads = thread_count(worker)
            queued = [exchange(kept, request) for request in requests]
        assert thread_count(worker) == threads
    ok, bad = b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"
    assert_same_answers(queued, threaded, [ok, bad, ok, ok, bad])
    assert b"inference-header-content-length" in threaded[3].lower()  # binary outputs
