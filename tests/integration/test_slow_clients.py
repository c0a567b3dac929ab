"""Clients that send or read slowly, or never, through real gunicorn: none of
them holds a request slot or the event loop, so everybody else is answered,
and each gets its whole answer or a clean 408 (issue 24, rows 1, 5 and 6)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time

import requests
import torch

from tests.conftest import body_of, tensor_json
from tests.integration.test_hostile import assert_raw_error, read_until_closed, serve_request, split_responses
from tests.integration.test_reliability import BODY, post
from tests.models import WideModel, script_and_save

STALLED_HEAD = b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\n"


def answered_within(url: str, seconds: float, clients: int = 4) -> list[float]:
    """Send ``tiny.pt`` requests from ``clients`` threads for ``seconds``; return each one's latency,
    failing on any answer but 200 with the right value, or one slower than a second."""

    def client() -> list[float]:
        latencies = []
        end = time.monotonic() + seconds
        with requests.Session() as session:
            while time.monotonic() < end:
                began = time.monotonic()
                response = session.post(f"{url}/serve", params={"servable_identifier": "tiny.pt"}, data=BODY, timeout=1)
                assert response.status_code == 200, response.text
                assert response.json()["result"]["value"] == [3, 5]
                latencies.append(time.monotonic() - began)
            # A fresh connection too, not only kept-alive ones.
            assert post(url, "tiny.pt", timeout=1).status_code == 200
        return latencies

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return [latency for future in [pool.submit(client) for _ in range(clients)] for latency in future.result()]


def stalled_connections(port: int, count: int, sent: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(sent)
        sockets.append(sock)
    return sockets


def assert_header_timeout(sock: socket.socket, timeout_s: int) -> None:
    assert_raw_error(
        split_responses(read_until_closed(sock))[0],
        408,
        "Request Timeout",
        f"the request headers did not arrive within the {timeout_s} s timeout",
    )


def exchange(sock: socket.socket, request: bytes, times: int) -> list[int]:
    """Send ``request`` ``times`` times over ``sock``, one after the other's answer; return the statuses."""
    statuses = []
    for _ in range(times):
        sock.sendall(request)
        stream = b""
        while b"\r\n\r\n" not in stream:
            stream += sock.recv(65536)
        head, _, body = stream.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
        while len(body) < length:
            body += sock.recv(1 << 20)
        statuses.append(int(head.split()[1]))
    return statuses


def test_clients_that_never_finish_their_headers_hold_no_request_slot(start):
    with start("--threads", "2", "--queue-size", "2", "--timeout", "5") as server:
        began = time.monotonic()
        stalled = stalled_connections(server.port, 6, STALLED_HEAD)
        try:
            latencies = answered_within(server.url, 3)
            assert max(latencies) < 1
            # Each is answered 408 and closed once --timeout has passed since its first bytes.
            for sock in stalled:
                assert_header_timeout(sock, 5)
            assert 5 <= time.monotonic() - began < 8
        finally:
            for sock in stalled:
                sock.close()


def test_a_kept_alive_connection_that_stalls_in_its_next_headers_gets_408(start):
    with start("--timeout", "2") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(serve_request(BODY, close=False))
            time.sleep(0.5)  # the first answer is sent, the connection kept alive
            sock.sendall(STALLED_HEAD)
            answers = split_responses(read_until_closed(sock))
        assert [status for status, _ in answers] == [200, 408]
        assert json.loads(answers[1][1])["detail"] == "the request headers did not arrive within the 2 s timeout"


def test_headers_sent_a_byte_at_a_time_within_the_timeout_are_answered(start):
    with start("--timeout", "5") as server:
        request = serve_request(BODY, close=True)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            head_end = request.index(b"\r\n\r\n") + 4
            for index in range(head_end):
                sock.sendall(request[index : index + 1])
                time.sleep(0.002)
            sock.sendall(request[head_end:])
            answers = split_responses(read_until_closed(sock))
        assert answers[0][0] == 200
        assert json.loads(answers[0][1])["result"]["value"] == [3, 5]


def test_eighty_stalled_header_senders_against_the_defaults(start):
    with start("--workers", "2", "--timeout", "3") as server:
        stalled = stalled_connections(server.port, 80, STALLED_HEAD)
        try:
            assert max(answered_within(server.url, 2)) < 1
        finally:
            for sock in stalled:
                sock.close()


def test_a_pipeliner_that_never_reads_does_not_stop_the_event_loop(start, model_root, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / "tiny.pt").write_bytes((model_root / "tiny.pt").read_bytes())
    script_and_save(WideModel(), root / "wide.pt")  # answers of about a megabyte fill the socket at once
    with start("--threads", "2", root=root) as server:
        pipeliner = socket.socket()
        pipeliner.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pipeliner.connect(("127.0.0.1", server.port))
        request = serve_request(body_of(tensor_json(torch.tensor([1.0]))), close=False).replace(b"tiny.pt", b"wide.pt")
        # Loaded, its typical forward a short one, the connection kept alive: what follows is answered in the loop.
        assert exchange(pipeliner, request, 30) == [200] * 30
        stop = threading.Event()

        def flood() -> None:
            # Kept-alive quick requests, never reading an answer, as long as the socket takes them.
            pipeliner.settimeout(0.2)
            sent = 0
            while not stop.is_set() and sent < 30_000:
                try:
                    pipeliner.sendall(request)
                    sent += 1
                except TimeoutError:
                    continue
                except OSError:
                    return

        flooder = threading.Thread(target=flood)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            others = pool.submit(answered_within, server.url, 4)
            time.sleep(0.2)  # the other clients are under way
            flooder.start()
            try:
                assert max(others.result()) < 1
            finally:
                stop.set()
                flooder.join()
                pipeliner.close()
        assert post(server.url, "tiny.pt").status_code == 200


def test_a_large_answer_to_a_slow_reader_arrives_whole_after_a_loop_answer(start):
    count = 20_000_000
    with start("--timeout", "60") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            # Loaded, its typical forward a short one: the event loop answers on the kept-alive connection.
            assert exchange(sock, serve_request(BODY, close=False), 30) == [200] * 30
            big = body_of({"type": "scalar", "value": count})
            sock.sendall(
                b"POST /serve?servable_identifier=allocating.pt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(big) + big
            )
            time.sleep(5)  # the answer waits, unread, in the socket
            status, answer = split_responses(read_until_closed(sock))[0]
        assert status == 200
        result = json.loads(answer)["result"]
        assert result["shape"] == [count] and len(result["value"]) == count
        assert "Traceback" not in server.log()
