"""The native model cache: capacity and buffer, LRU order, single-flight
loading, eviction while in use, invalidation and files changing on disk."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from tests.conftest import body_of, tensor_json
from tests.models import AffineModel, script_and_save
from torch_serving import ModelLoadError, ModelNotFoundError, Server

BODY = body_of(tensor_json(torch.tensor([1.0, 2.0])))


def answer(server: Server, path: Path, prob: float = 0.0, body: bytes = BODY) -> list:
    return json.loads(server.serve(str(path), path.name, body, prob))["result"]["value"]


def names(server: Server) -> list[str]:
    return [Path(p).name for p in server.cached_paths()]


@pytest.fixture
def plus(model_root) -> list[Path]:
    """Six models; model k adds k."""
    return [model_root / "many" / f"plus{k}.pt" for k in range(6)]


def test_holds_capacity_plus_buffer_then_evicts_down_to_capacity(plus):
    server = Server(capacity=2, buffer=1)
    for k in range(3):
        assert answer(server, plus[k]) == [1 + k, 2 + k]
    assert names(server) == ["plus2.pt", "plus1.pt", "plus0.pt"]
    answer(server, plus[3])
    assert names(server) == ["plus3.pt", "plus2.pt"]
    assert server.stats() == {"hits": 0, "loads": 4, "failed_loads": 0, "evictions": 2}


def test_evicts_least_recently_used(plus):
    server = Server(capacity=2, buffer=0)
    answer(server, plus[0])
    answer(server, plus[1])
    answer(server, plus[0])
    answer(server, plus[2])
    assert names(server) == ["plus2.pt", "plus0.pt"]
    assert server.stats()["hits"] == 1


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        Server(capacity=0, buffer=3)


def test_concurrent_misses_load_once(model_root):
    server = Server(capacity=4, buffer=0)
    path = model_root / "model-example.pt"
    body = (Path(__file__).parents[2] / "example" / "post-data.json").read_bytes()
    start = threading.Barrier(8)
    results, errors = [], []

    def request():
        start.wait()
        try:
            results.append(json.loads(server.serve(str(path), path.name, body, 0.0)))
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(r == results[0] for r in results) and len(results) == 8
    assert server.stats()["loads"] == 1
    assert server.stats()["hits"] == 7


def test_concurrent_failed_loads_are_never_cached(model_root):
    server = Server(capacity=4, buffer=0)
    path = model_root / "corrupt.pt"
    start = threading.Barrier(6)
    errors = []

    def request():
        start.wait()
        try:
            server.serve(str(path), path.name, BODY, 0.0)
        except ModelLoadError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 6 and all(e.startswith("corrupt.pt is not a loadable TorchScript module") for e in errors)
    assert server.cached_paths() == []
    assert server.stats()["failed_loads"] == server.stats()["loads"] >= 1


def test_model_evicted_while_in_use_finishes_its_request(model_root):
    server = Server(capacity=1, buffer=0)
    slow = model_root / "slow.pt"
    body = body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": 3000})
    outcome = {}

    def run_slow():
        outcome["value"] = answer(server, slow, body=body)

    worker = threading.Thread(target=run_slow)
    worker.start()
    while "slow.pt" not in names(server):
        pass
    assert answer(server, model_root / "tiny.pt") == [3, 5]
    assert names(server) == ["tiny.pt"]
    worker.join()
    assert outcome["value"] == [2]


def test_gil_is_released_while_a_model_runs(model_root):
    server = Server(capacity=1, buffer=0)
    body = body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": 2000})
    answer(server, model_root / "slow.pt", body=body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": 1}))
    worker = threading.Thread(target=answer, args=(server, model_root / "slow.pt"), kwargs={"body": body})
    ticks = 0
    worker.start()
    # With the GIL held by the native call, this loop could not run until
    # the request ended, and would count next to nothing.
    while worker.is_alive():
        ticks += 1
    assert ticks > 10_000


def test_invalidation_probability_reloads_and_keeps_answers(plus):
    server = Server(capacity=2, buffer=0)
    for _ in range(3):
        assert answer(server, plus[1], prob=1.0) == [2, 3]
    assert server.stats()["loads"] == 3
    for _ in range(3):
        answer(server, plus[1], prob=0.0)
    assert server.stats()["loads"] == 3


def test_file_replaced_by_a_broken_one_is_refused_then_recovers(tmp_path, plus):
    server = Server(capacity=2, buffer=0)
    path = tmp_path / "m.pt"
    shutil.copy(plus[2], path)
    assert answer(server, path) == [3, 4]
    identity = path.stat()
    path.write_bytes(b"x" * identity.st_size)  # same size, new mtime: a new file
    with pytest.raises(ModelLoadError):
        answer(server, path)
    assert server.cached_paths() == []
    shutil.copy(plus[4], path)
    assert answer(server, path) == [5, 6]


def test_replaced_file_is_a_new_model(tmp_path, plus):
    server = Server(capacity=2, buffer=0)
    path = tmp_path / "m.pt"
    shutil.copy(plus[0], path)
    assert answer(server, path) == [1, 2]
    staged = tmp_path / "staged.pt"
    shutil.copy(plus[5], staged)
    staged.replace(path)  # atomic rename
    assert answer(server, path) == [6, 7]
    script_and_save(AffineModel(10.0, 0.0), path)  # rewritten in place
    assert answer(server, path) == [10, 20]
    assert names(server) == ["m.pt"]


def test_deleted_file_is_not_found(tmp_path, plus):
    server = Server(capacity=2, buffer=0)
    path = tmp_path / "m.pt"
    shutil.copy(plus[0], path)
    answer(server, path)
    path.unlink()
    with pytest.raises(ModelNotFoundError, match="no model file m.pt under the model root"):
        answer(server, path)
