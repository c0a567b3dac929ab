"""What no client, burst or file may cost a worker, through real gunicorn:
stalled uploads, bursts beyond the threads, a large body's memory, a failed
load in a full cache, queued work past its deadline, and gunicorn's own
refusals answered in the envelope."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import socket
import time
from pathlib import Path

import requests
import torch

from tests.conftest import WARM_UP_ROUNDS, body_of, rounds_body, tensor_json
from tests.integration.server import assert_busy
from tests.integration.test_hostile import (
    assert_raw_error,
    raw_exchange,
    read_until_closed,
    serve_request,
    split_responses,
)

BODY = body_of(tensor_json(torch.tensor([1.0, 2.0])))


def post(url: str, identifier: str, body: bytes = BODY, timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/serve", params={"servable_identifier": identifier}, data=body, timeout=timeout)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_stalled_uploads_get_408_while_others_are_served(start):
    with start("--threads", "4", "--timeout", "3") as server:
        request = serve_request(BODY, close=True)
        stalled = []
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(request[: request.index(b"\r\n\r\n") + 4 + 5])  # headers and 5 body bytes
            stalled.append(sock)
        try:
            # While the eight uploads stall, everybody else is served.
            for _ in range(5):
                assert requests.get(f"{server.url}/healthcheck", timeout=2).status_code == 200
                assert post(server.url, "tiny.pt", timeout=2).json()["result"]["value"] == [3, 5]
            # Each stalled upload is answered 408 at its deadline and closed.
            for sock in stalled:
                assert_raw_error(
                    split_responses(read_until_closed(sock))[0],
                    408,
                    "Request Timeout",
                    "the request body did not arrive before the request's deadline"
                    f" (received 5 of the {len(BODY)} bytes Content-Length announced)",
                )
        finally:
            for sock in stalled:
                sock.close()
        assert post(server.url, "tiny.pt").json()["result"]["value"] == [3, 5]


def test_a_stalled_chunked_upload_gets_408(start):
    with start("--timeout", "2") as server:
        head = b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head + b'5\r\n[{"ty\r\n')
            answer = read_until_closed(sock)
            status, body = split_responses(answer)[0]
        assert status == 408
        assert b"\r\nConnection: close\r\n" in answer  # as it is
        assert json.loads(body)["detail"] == "the request body did not arrive before the request's deadline"
        assert post(server.url, "tiny.pt").json()["result"]["value"] == [3, 5]


def test_a_burst_beyond_the_threads_gets_fast_503s(start):
    with start("--threads", "1", "--queue-size", "1", "--timeout", "60") as server:
        post(server.url, "slow.pt", rounds_body(WARM_UP_ROUNDS))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(post, server.url, "slow.pt", rounds_body(3000)) for _ in range(2)]
            time.sleep(0.5)  # one slow request holds the worker's thread, the other its spare thread
            burst = [pool.submit(post, server.url, "tiny.pt") for _ in range(6)]
            refused = [future.result() for future in burst]
            # Refused while the slow ones still run: nothing waited for them.
            assert not any(future.done() for future in slow)
            assert [future.result().status_code for future in slow] == [200, 200]
        for response in refused:
            assert_busy(response, 2)
        assert post(server.url, "tiny.pt").json()["result"]["value"] == [3, 5]


def test_a_request_whose_deadline_passed_in_the_queue_never_runs(start, model_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(model_root / "slow.pt", root / "slow.pt")
    with start("--threads", "1", "--queue-size", "4", "--timeout", "1", "--instances", "1", root=root) as server:
        post(server.url, "slow.pt", rounds_body(WARM_UP_ROUNDS))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # About 2 s of forward here (3000 rounds took 0.8 s on a fast machine, less than the queued
            # call's 0.3 + 1 s): the holder keeps the instance past the queued call's deadline.
            holder = pool.submit(post, server.url, "slow.pt", rounds_body(8000))
            time.sleep(0.3)
            # Waits for the model's only instance, which the holder keeps past the deadline.
            queued = post(server.url, "slow.pt", rounds_body(1))
            assert queued.status_code == 504
            assert holder.result().status_code == 504

        def executions() -> int:
            return requests.get(f"{server.url}/cache", timeout=10).json()["stats"]["models"]["slow.pt"]["executions"]

        # Once the holder's forward is over, had the queued call run, it would have been a third execution,
        # right after it.
        deadline = time.monotonic() + 30
        while executions() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        assert executions() == 2


def test_a_batched_request_in_a_forward_past_its_deadline_gets_504_when_the_forward_ends(start, model_root, tmp_path):
    # A batching model with short forwards waits for them in the request's own thread: its queue lets
    # a request go at its deadline, but a forward under way cannot, so its 504 comes as it ends.
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(model_root / "batch_slow.pt", root / "batch_slow.pt")
    with start("--timeout", "1", root=root) as server:
        for _ in range(3):  # loaded, and known to run short
            assert post(server.url, "batch_slow.pt", rounds_body(1)).status_code == 200
        # Well past the deadline here (8000 rounds took about 2 s on a slow machine).
        late = post(server.url, "batch_slow.pt", rounds_body(12000))
        assert late.status_code == 504
        assert late.json()["detail"] == "the request did not finish within the 1 s deadline; its work was abandoned"
        # Its forward is over: the model's only instance is free at once. Had the request left its
        # forward running at the deadline, this one would wait for it, past its own deadline.
        started = time.monotonic()
        assert post(server.url, "batch_slow.pt", rounds_body(1)).status_code == 200
        assert time.monotonic() - started < 0.5


def test_a_failed_load_in_a_full_cache_evicts_nothing(start, model_root):
    with start("--model-capacity", "2", "--buffer-size", "1") as server:
        for k in range(3):
            assert post(server.url, f"many/plus{k}.pt").status_code == 200
        before = requests.get(f"{server.url}/cache", timeout=10).json()
        broken = post(server.url, "corrupt.pt")
        assert broken.status_code == 422
        after = requests.get(f"{server.url}/cache", timeout=10).json()
        assert after["models"] == before["models"]
        assert after["stats"]["evictions"] == 0


def test_memory_returns_near_its_baseline_after_a_large_body(start):
    with start("--threads", "4", "--max-body-size", "80MiB") as server:
        (worker,) = server.workers()
        # Warm every thread with small requests before the baseline.
        for _ in range(20):
            post(server.url, "tiny.pt")
        baseline = rss_bytes(worker)
        # 64 MiB of numbers, refused after the whole body is parsed: kinds.pt
        # wants a List[int] first.
        large = b'[{"type":"tensor","value":[' + b"1," * (32 * 1024 * 1024 - 8) + b"1]}]"
        for _ in range(2):
            response = post(server.url, "kinds.pt", large, timeout=120)
            assert response.status_code == 400
        time.sleep(0.5)
        grown = rss_bytes(worker) - baseline
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB after large bodies"


def test_gunicorns_own_refusals_use_the_envelope(start):
    with start() as server:
        line = b"GET /healthcheck?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, body = split_responses(raw_exchange(server, line))[0]
        doc = json.loads(body)
        assert (status, doc["code"], doc["description"]) == (414, 414, "URI Too Long")
        assert doc["message"] == "Client Error" and "4094" in doc["detail"]
        headers = b"".join(b"X-Flood-%d: y\r\n" % i for i in range(150))
        flood = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n"
        status, body = split_responses(raw_exchange(server, flood))[0]
        assert status == 431
        assert json.loads(body)["code"] == 431
        assert requests.get(f"{server.url}/healthcheck", timeout=10).status_code == 200


def test_head_answers_like_get(start):
    with start() as server:
        paths = ["/healthcheck", "/cache", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/tiny"]
        for path in [*paths, "/v2/models/tiny/ready", "/v2/models/tiny/config", "/v2/models/stats"]:
            got = requests.get(server.url + path, timeout=10)
            head = requests.head(server.url + path, timeout=10)
            assert head.status_code == got.status_code == 200, path
            assert head.content == b""
