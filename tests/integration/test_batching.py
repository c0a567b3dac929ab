"""Dynamic batching through real gunicorn: concurrent clients of a batched
model each get their own answer, over /serve and V2, and /cache shows the
batches formed."""

from __future__ import annotations

import json
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
    options = ["--model-root", str(model_root), "--workers", "1", "--threads", "2"]
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
