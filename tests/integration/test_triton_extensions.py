"""Triton's statistics and model repository extensions through the stock tritonclient, against a
real gunicorn with 2 workers: exact counts over workers, the index from an empty body, and
load and unload seen by both workers."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from tests.integration.server import serving
from tests.integration.test_preload import cache_of_every_worker


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    with serving(tmp_path_factory, "triton-extensions", "--model-root", str(model_root), "--workers", "2") as running:
        yield running


def eventually(check, timeout_s: float = 10.0):
    """Return ``check()`` once it is truthy (workers act on each other's calls within a second)."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, "the workers did not agree in time"
        time.sleep(0.2)
    return result


def infer_tiny(url: str) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    # A fresh connection each time, so that both workers answer some.
    assert requests.post(url + "/v2/models/tiny/infer", json=body, headers={"Connection": "close"}, timeout=30).ok


def test_statistics_count_every_workers_requests(server, triton):
    for _ in range(30):
        infer_tiny(server.url)

    def tiny_stats():
        stats = triton.get_inference_statistics("tiny")["model_stats"]
        return stats if stats[0]["inference_stats"]["success"]["count"] == 30 else None

    (tiny,) = eventually(tiny_stats)
    assert (tiny["name"], tiny["version"], tiny["inference_count"], tiny["execution_count"]) == ("tiny", "1", 30, 30)
    phases = tiny["inference_stats"]
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert phases[phase]["count"] == 30 and phases[phase]["ns"] >= 0
    assert phases["success"]["ns"] > phases["compute_infer"]["ns"] > 0
    assert phases["fail"] == {"count": 0, "ns": 0}
    assert tiny["last_inference"] > (time.time() - 600) * 1000
    # Every model that served or is loaded, not every file under the root.
    triton.load_model("nested/triple")  # the other worker loads it within about half a second

    def every_name():
        names = {entry["name"] for entry in triton.get_inference_statistics()["model_stats"]}
        return names if {"tiny", "nested/triple"} <= names else None

    assert "corrupt" not in eventually(every_name)


def test_the_repository_index_lists_every_servable_file(server, triton):
    index = triton.get_model_repository_index()  # tritonclient posts an empty body
    by_name = {entry["name"]: entry for entry in index}
    assert {"tiny", "nested/triple", "corrupt", "model-example"} <= set(by_name)
    assert all(entry["version"] == "1" and entry["state"] in {"READY", "UNAVAILABLE"} for entry in index)
    ready = requests.post(server.url + "/v2/repository/index", json={"ready": True}, timeout=30).json()
    assert all(entry["state"] == "READY" for entry in ready)


def test_load_and_unload_are_seen_by_both_workers(server, triton):
    triton.load_model("nested/triple")
    eventually(lambda: all("nested/triple.pt" in c["models"] for c in cache_of_every_worker(server).values()))
    infer_tiny(server.url)
    triton.unload_model("nested/triple")
    eventually(lambda: all("nested/triple.pt" not in c["models"] for c in cache_of_every_worker(server).values()))
    # Unloaded models still load on demand.
    x = httpclient.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.array([2.0], dtype=np.float32))
    assert triton.infer("nested/triple", [x]).as_numpy("OUTPUT__0").tolist() == [6.0]


def test_loading_a_broken_model_answers_its_error(triton):
    with pytest.raises(Exception) as error:
        triton.load_model("corrupt")
    assert "corrupt.pt is not a loadable TorchScript module" in str(error.value)


def test_load_and_unload_calls_leave_one_entry_per_model(model_root, tmp_path_factory):
    import json
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    tmpdir = tmp_path_factory.mktemp("tmpdir")
    options = ["--model-root", str(model_root), "--workers", "2"]
    with serving(tmp_path_factory, "repository-churn", *options, env={"TMPDIR": str(tmpdir)}) as server:

        def churn(model: str) -> int:
            calls = 0
            with requests.Session() as session:
                for _ in range(100):
                    for action in ("unload", "load"):
                        assert session.post(f"{server.url}/v2/repository/models/{model}/{action}", timeout=30).ok
                        calls += 1
            return calls

        with ThreadPoolExecutor(4) as pool:
            calls = sum(pool.map(churn, ["tiny", "nested/triple", "echo", "tiny"]))
        assert calls == 800
        [state_file] = tmpdir.glob("torch-serving-*/repository.json")
        state = json.loads(state_file.read_text())
        assert state["generation"] == 800
        assert set(state["models"]) == {"tiny.pt", "nested/triple.pt", "echo.pt"}
        assert all(action == "load" for _, action, _ in state["models"].values())
        # A replacement worker carries out each model's last action once, not the 800 calls.
        before = set(server.workers())
        os.kill(server.workers()[0], signal.SIGKILL)
        [fresh] = eventually(lambda: len(server.workers()) == 2 and set(server.workers()) - before)
        models = {"tiny.pt", "nested/triple.pt", "echo.pt"}
        eventually(lambda: models <= set(cache_of_every_worker(server)[fresh]["models"]))
        replayed = [
            line for line in server.log().splitlines() if f"[{fresh}]" in line and "as another worker asked" in line
        ]
        assert len(replayed) == 3
