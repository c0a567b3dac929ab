"""GET /metrics through a real gunicorn with 2 workers: counters exact over workers, every
histogram present, cache and execution counters, failures by status."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import body_of, tensor_json
from tests.integration.server import serving
from tests.integration.test_preload import cache_of_every_worker
import torch

HISTOGRAMS = ("queue", "decode", "forward", "encode", "request")


def samples(server) -> dict[tuple, float]:
    text = requests.get(server.url + "/metrics", timeout=30).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(server, check, timeout_s: float = 10.0) -> dict:
    """Scrape until ``check(samples)`` holds (native counters are sampled every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = samples(server)
        if check(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def serve_tiny(url: str, body: bytes, count: int) -> None:
    """Send ``count`` requests on a connection of their own."""
    with requests.Session() as session:
        for _ in range(count):
            response = session.post(url + "/serve", params={"servable_identifier": "tiny.pt"}, data=body, timeout=30)
            assert response.status_code == 200


def test_counters_are_exact_over_two_workers(model_root, tmp_path_factory):
    options = ["--model-root", str(model_root), "--workers", "2"]
    with serving(tmp_path_factory, "metrics", *options) as server:
        body = body_of(tensor_json(torch.ones(1, 4)))
        sent = 0
        # Until both workers have served some: only then do the sums span workers.
        for _ in range(20):
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: serve_tiny(server.url, body, 5), range(8)))
            sent += 40
            served = [
                document["stats"]["models"].get("tiny.pt", {}).get("requests", 0)
                for document in cache_of_every_worker(server).values()
            ]
            if all(served):
                break
        assert sum(served) == sent and all(served)
        for _ in range(3):
            assert (
                requests.post(server.url + "/serve?servable_identifier=nope.pt", data=body, timeout=30).status_code
                == 404
            )
        v2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        for _ in range(5):
            assert requests.post(server.url + "/v2/models/nested/triple/infer", json=v2, timeout=30).ok
        # Each worker writes its tally and native counters every second.
        found = wait_for(
            server,
            lambda f: (
                value(f, "nv_inference_exec_count_total", model="tiny.pt", version="1") >= sent
                and value(f, "torch_serving_requests_total", model="nested/triple.pt", endpoint="infer", status="200")
                == 5
                and value(f, "torch_serving_requests_total", model="", endpoint="serve", status="404") == 3
            ),
        )

    assert value(found, "torch_serving_requests_total", model="tiny.pt", endpoint="serve", status="200") == sent
    assert value(found, "torch_serving_requests_total", model="", endpoint="serve", status="404") == 3
    assert value(found, "torch_serving_requests_total", model="nested/triple.pt", endpoint="infer", status="200") == 5
    assert value(found, "nv_inference_request_success_total", model="tiny.pt", version="1") == sent
    assert value(found, "nv_inference_request_failure_total", model="", version="1", status="404") == 3
    assert value(found, "nv_inference_count_total", model="tiny.pt", version="1") == sent
    assert value(found, "nv_inference_exec_count_total", model="tiny.pt", version="1") == sent
    assert value(found, "torch_serving_request_body_bytes_total", model="tiny.pt") == sent * len(body)
    for phase in HISTOGRAMS:
        assert value(found, f"torch_serving_{phase}_seconds_count", model="tiny.pt") == sent
        assert value(found, f"torch_serving_{phase}_seconds_bucket", model="tiny.pt", le="+Inf") == sent
        assert value(found, f"torch_serving_{phase}_seconds_sum", model="tiny.pt") >= 0
    # Each worker loaded tiny.pt, and nested/triple.pt if it served one; nothing was evicted.
    assert 2 <= value(found, "torch_serving_cache_loads_total") <= 4
    assert value(found, "torch_serving_cache_failed_loads_total") == 0
    assert value(found, "torch_serving_cache_evictions_total") == 0
    assert 2 <= value(found, "torch_serving_cache_models") <= 4


def test_the_shared_directory_is_fresh_at_start_and_removed_at_exit(model_root, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    options = ["--model-root", str(model_root), "--workers", "2"]
    with serving(tmp_path_factory, "shared-dir", *options, env={"TMPDIR": str(scratch)}) as server:
        (shared,) = scratch.glob("torch-serving-*")
        assert requests.get(server.url + "/metrics", timeout=30).ok
        assert any((shared / "metrics").iterdir())
    assert not list(scratch.glob("torch-serving-*"))


def test_a_dead_workers_counters_still_count_and_its_gauge_does_not(model_root, tmp_path_factory):
    import os
    import signal

    options = ["--model-root", str(model_root), "--workers", "2"]
    with serving(tmp_path_factory, "metrics-dead-worker", *options) as server:
        body = body_of(tensor_json(torch.ones(1, 4)))
        served = {}
        for _ in range(20):
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: serve_tiny(server.url, body, 5), range(8)))
            served = {
                pid: document["stats"]["models"].get("tiny.pt", {}).get("requests", 0)
                for pid, document in cache_of_every_worker(server).items()
            }
            if all(served.values()):
                break
        sent = sum(served.values())

        def counted(found):
            return value(found, "torch_serving_requests_total", model="tiny.pt", endpoint="serve", status="200") == sent

        before = wait_for(server, counted)
        assert counted(before) and value(before, "torch_serving_cache_models") == 2
        victim = next(iter(served))
        os.kill(victim, signal.SIGKILL)
        # Once a fresh worker replaced it: the dead one's requests still count, its models do not.
        after = wait_for(server, lambda f: victim not in server.workers() and len(server.workers()) == 2 and counted(f))
        assert counted(after)
        assert value(after, "torch_serving_cache_models") == 1


def test_workers_replaced_by_sighup_lose_no_tally(model_root, tmp_path_factory):
    import signal
    import threading

    options = ["--model-root", str(model_root), "--workers", "2"]
    with serving(tmp_path_factory, "metrics-sighup", *options) as server:
        body = body_of(tensor_json(torch.ones(1, 4)))
        before = set(server.workers())
        sent = [0]
        lock = threading.Lock()

        def client() -> None:
            with requests.Session() as session:
                for _ in range(125):
                    response = session.post(
                        server.url + "/serve", params={"servable_identifier": "tiny.pt"}, data=body, timeout=30
                    )
                    assert response.status_code == 200
                    with lock:
                        sent[0] += 1
                        if sent[0] == 100:  # the reload happens while requests keep coming
                            server.process.send_signal(signal.SIGHUP)

        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(client) for _ in range(4)]:
                future.result()
        deadline = time.monotonic() + 30
        while before & set(server.workers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not before & set(server.workers())  # every worker that served was replaced

        def counted(found):
            return value(found, "torch_serving_requests_total", model="tiny.pt", endpoint="serve", status="200") == 500

        assert counted(wait_for(server, counted))
