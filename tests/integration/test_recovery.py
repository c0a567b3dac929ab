"""Faults: a killed worker, SIGTERM, SIGHUP, and model files changing under a
running server. Every answer must be clean and right afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import threading
import time

import pytest
import requests
import torch

from tests.conftest import WARM_UP_ROUNDS, body_of, rounds_body, tensor_json
from tests.models import AffineModel, script_and_save

BODY = body_of(tensor_json(torch.tensor([1.0, 2.0])))


def post(url: str, identifier: str, body: bytes = BODY, timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/serve", params={"servable_identifier": identifier}, data=body, timeout=timeout)


def wait_until(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_killed_worker_is_replaced_and_the_others_keep_serving(start):
    with start("--workers", "2") as server:
        workers = server.workers()
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        for _ in range(20):
            assert post(server.url, "tiny.pt").json()["result"]["value"] == [3, 5]
        assert wait_until(lambda: len(server.workers()) == 2 and workers[0] not in server.workers())
        for _ in range(20):
            assert post(server.url, "tiny.pt").json()["result"]["value"] == [3, 5]


def test_sigterm_drains_in_flight_requests(start):
    with start("--workers", "1") as server:
        post(server.url, "slow.pt", rounds_body(WARM_UP_ROUNDS))
        outcome = {}
        request = threading.Thread(
            target=lambda: outcome.update(response=post(server.url, "slow.pt", rounds_body(6000)))
        )
        request.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # While the worker drains, a new connection is refused at once instead of waiting unanswered.
        began = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            post(server.url, "tiny.pt", timeout=5)
        assert time.monotonic() - began < 1
        request.join(timeout=60)
        assert outcome["response"].status_code == 200
        assert outcome["response"].json()["result"]["value"] == [2]
        assert server.process.wait(timeout=60) == 0


def test_sigterm_answers_a_request_the_loop_queued(start):
    # The second request of a kept-alive connection for a batching model, arriving whole, is queued by
    # the event loop, which answers it once its batch has run: it must still do so while the worker drains.
    def slow(rounds: int) -> bytes:
        body = rounds_body(rounds)
        head = b"POST /serve?servable_identifier=batch_slow.pt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        return head % len(body) + body

    def whole_answer(sock: socket.socket) -> bytes:
        # Gunicorn may send an answer's headers and body apart: read up to its Content-Length.
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer.partition(b"\r\n\r\n")[0]).group(1)
        ):
            received = sock.recv(65536)
            assert received, f"the connection closed after {answer!r}"
            answer += received
        return answer

    with start("--workers", "1") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as kept:
            for rounds in (WARM_UP_ROUNDS, WARM_UP_ROUNDS):
                kept.sendall(slow(rounds))
                assert whole_answer(kept).startswith(b"HTTP/1.1 200 OK")
            kept.sendall(slow(6000))
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            answer = whole_answer(kept)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["result"]["value"] == [2]
        assert server.process.wait(timeout=60) == 0


def test_sighup_reloads_workers_without_failed_requests(start):
    with start("--workers", "2") as server:
        before = set(server.workers())
        statuses, stop = [], threading.Event()

        def client():
            while not stop.is_set():
                try:
                    statuses.append(post(server.url, "tiny.pt").status_code)
                except requests.RequestException as error:  # a lost request fails the test too
                    statuses.append(repr(error))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1)
        server.process.send_signal(signal.SIGHUP)
        reloaded = wait_until(lambda: len(server.workers()) == 2 and not before & set(server.workers()))
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        assert reloaded
        assert statuses and set(statuses) == {200}


def test_model_files_deleted_and_rewritten_under_a_running_server(start, tmp_path, model_root):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(model_root / "tiny.pt", root / "m.pt")
    with start("--workers", "1", root=root) as server:
        assert post(server.url, "m.pt").json()["result"]["value"] == [3, 5]
        (root / "m.pt").unlink()
        missing = post(server.url, "m.pt")
        assert missing.status_code == 404 and missing.json()["description"] == "Model not found"
        script_and_save(AffineModel(5.0, 0.0), root / "m.pt")
        assert post(server.url, "m.pt").json()["result"]["value"] == [5, 10]
        # Rewritten in place (same inode), truncated mid-way: only clean answers.
        with open(root / "m.pt", "r+b") as f:
            f.truncate(100)
        broken = post(server.url, "m.pt")
        assert broken.status_code == 422 and broken.json()["description"] == "Model not loadable"
        script_and_save(AffineModel(7.0, 0.0), root / "m.pt")
        assert post(server.url, "m.pt").json()["result"]["value"] == [7, 14]
