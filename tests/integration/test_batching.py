"""Dynamic batching through real gunicorn: concurrent clients of a batched
model each get their own answer, over /serve and V2, and /cache shows the
batches formed."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch

from tests.conftest import body_of, tensor_json
from tests.integration.server import serving
from tests.models import BatchLinearModel

CLIENTS = 6


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    options = ["--model-root", str(model_root), "--workers", "1", "--threads", "2", "--instances", "3"]
    with serving(tmp_path_factory, "batching", *options) as running_server:
        yield running_server


def expected(x: torch.Tensor) -> list[float]:
    with torch.inference_mode():
        return BatchLinearModel()(x).flatten().tolist()


def model_counters(server, identifier: str) -> dict:
    return requests.get(f"{server.url}/cache", timeout=10).json()["stats"]["models"][identifier]


def test_concurrent_clients_each_get_their_own_answer_from_shared_forwards(server):
    inputs = [torch.full((1, 4), float(k)) - torch.arange(4.0) for k in range(CLIENTS)]

    def call(x: torch.Tensor) -> requests.Response:
        return requests.post(
            f"{server.url}/serve",
            params={"servable_identifier": "batch_linear.pt"},
            data=body_of(tensor_json(x)),
            timeout=30,
        )

    # More clients than the worker's two threads: the others wait on its spare threads.
    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(call, inputs))
    for x, response in zip(inputs, responses):
        assert response.status_code == 200
        assert response.json()["result"]["value"] == pytest.approx(expected(x), rel=1e-5, abs=1e-6)
    counters = model_counters(server, "batch_linear.pt")
    assert counters["requests"] == CLIENTS
    assert counters["executions"] < CLIENTS


def test_v2_clients_are_batched_and_a_bad_one_fails_alone(server):
    def call(k: int) -> requests.Response:
        x = torch.full((1, 4), float(k))
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.flatten().tolist()}]}
        if k == 2:
            body["inputs"][0]["shape"] = [1, 5]  # does not match its data
        return requests.post(f"{server.url}/v2/models/batch_scale/infer", data=json.dumps(body), timeout=30)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(call, range(4)))
    assert [r.status_code for r in responses] == [200, 200, 400, 200]
    for k in (0, 1, 3):
        assert responses[k].json()["outputs"][0]["data"] == [2.0 * k] * 4
    # The bad one never got past decoding.
    assert model_counters(server, "batch_scale.pt")["requests"] == 3


def test_v2_config_reports_max_batch_size(server):
    config = requests.get(f"{server.url}/v2/models/batch_linear/config", timeout=10)
    assert config.status_code == 200
    assert config.json()["max_batch_size"] == 8
    assert requests.get(f"{server.url}/v2/models/tiny/versions/1/config", timeout=10).json()["max_batch_size"] == 0
    missing = requests.get(f"{server.url}/v2/models/absent/config", timeout=10)
    assert missing.status_code == 404


def test_v2_config_reports_the_instances(server):
    # One worker on this server; a model without instance_count gets the server's --instances.
    declared = requests.get(f"{server.url}/v2/models/slow_pair/config", timeout=10).json()
    assert declared["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    default = requests.get(f"{server.url}/v2/models/tiny/config", timeout=10).json()
    assert default["instance_group"] == [{"count": 3, "kind": "KIND_CPU"}]


def slow_body(x: torch.Tensor, rounds: int) -> bytes:
    return body_of(tensor_json(x), {"type": "scalar", "value": rounds})


def post_slow(server, identifier: str, x: torch.Tensor, rounds: int) -> requests.Response:
    return requests.post(
        f"{server.url}/serve", params={"servable_identifier": identifier}, data=slow_body(x, rounds), timeout=60
    )


def assert_each_answered_plus_one(inputs: list[torch.Tensor], responses: list[requests.Response]) -> None:
    """slow.pt answers ``x + 1``: each client must get its own."""
    for x, response in zip(inputs, responses, strict=True):
        assert response.status_code == 200
        assert response.json()["result"]["value"] == (x + 1).flatten().tolist()


# Long enough that every client's request is in the worker while the first forwards run.
SLOW_ROUNDS = 600


def test_at_most_the_declared_instances_run_at_once(server):
    inputs = [torch.full((1, 3), float(k)) for k in range(8)]
    with ThreadPoolExecutor(len(inputs)) as pool:
        responses = list(pool.map(lambda x: post_slow(server, "slow_pair.pt", x, SLOW_ROUNDS), inputs))
    assert_each_answered_plus_one(inputs, responses)
    counters = model_counters(server, "slow_pair.pt")
    # Eight requests on the worker's threads (2) and spare ones, two forwards at a time.
    assert counters["instances"] == 2
    assert counters["peak_running"] == 2
    assert counters["executions"] == 8


def test_a_batch_takes_the_requests_that_spare_threads_carry(server):
    first = torch.full((1, 3), -1.0)
    inputs = [torch.full((1, 3), float(k)) for k in range(7)]
    with ThreadPoolExecutor(1 + len(inputs)) as pool:
        leader = pool.submit(post_slow, server, "batch_slow.pt", first, SLOW_ROUNDS)
        # The first forward is under way before the others arrive: they all queue behind it,
        # two on the worker's threads and five on spare threads, and share the next forward.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            loaded = requests.get(f"{server.url}/cache", timeout=10).json()["stats"]["models"]
            if loaded.get("batch_slow.pt", {}).get("executions"):
                break
            time.sleep(0.01)
        responses = list(pool.map(lambda x: post_slow(server, "batch_slow.pt", x, SLOW_ROUNDS), inputs))
        assert leader.result().json()["result"]["value"] == (first + 1).flatten().tolist()
    assert_each_answered_plus_one(inputs, responses)
    counters = model_counters(server, "batch_slow.pt")
    assert counters["requests"] == 8
    assert counters["executions"] == 2
    assert counters["peak_running"] == 1
