"""The native model cache: capacity and buffer, LRU order, single-flight
loading, eviction while in use, invalidation and files changing on disk."""

from __future__ import annotations

import gc
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import body_of, tensor_json
from tests.models import AffineModel, script_and_save
from torch_serving import DeadlineError, Executor, ModelLoadError, ModelNotFoundError, Pipeline

BODY = body_of(tensor_json(torch.tensor([1.0, 2.0])))


def answer(pipeline: Pipeline, relative: str, prob: float = 0.0, body: bytes = BODY) -> list:
    return json.loads(pipeline.serve(relative, relative, body, prob))["result"]["value"]


def names(pipeline: Pipeline) -> list[str]:
    return [Path(p).name for p in pipeline.cached_paths()]


@pytest.fixture
def plus() -> list[str]:
    """Six models under the model root; model k adds k."""
    return [f"many/plus{k}.pt" for k in range(6)]


@pytest.fixture
def make_server(model_root):
    """Return a Pipeline over the test model root."""
    return lambda capacity, buffer, root=model_root: Pipeline(str(root), capacity, buffer)


def test_holds_capacity_plus_buffer_then_evicts_down_to_capacity(plus, make_server):
    pipeline = make_server(2, 1)
    for k in range(3):
        assert answer(pipeline, plus[k]) == [1 + k, 2 + k]
    assert names(pipeline) == ["plus2.pt", "plus1.pt", "plus0.pt"]
    answer(pipeline, plus[3])
    assert names(pipeline) == ["plus3.pt", "plus2.pt"]
    stats = pipeline.stats()
    assert {key: stats[key] for key in ("hits", "loads", "failed_loads", "evictions")} == {
        "hits": 0,
        "loads": 4,
        "failed_loads": 0,
        "evictions": 2,
    }
    assert list(stats["models"]) == pipeline.cached_paths()


def test_evicts_least_recently_used(plus, make_server):
    pipeline = make_server(2, 0)
    answer(pipeline, plus[0])
    answer(pipeline, plus[1])
    answer(pipeline, plus[0])
    answer(pipeline, plus[2])
    assert names(pipeline) == ["plus2.pt", "plus0.pt"]
    assert pipeline.stats()["hits"] == 1


def test_capacity_must_be_positive(make_server):
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        make_server(0, 3)


def test_model_root_must_be_a_directory(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        Pipeline(str(tmp_path / "missing"), 1, 0)


def test_files_over_the_size_limit_are_refused(model_root):
    pipeline = Pipeline(str(model_root), 2, 0, "cpu", 100)
    size = (model_root / "tiny.pt").stat().st_size
    with pytest.raises(ModelLoadError) as info:
        answer(pipeline, "tiny.pt")
    assert str(info.value) == f"tiny.pt is {size} bytes, over the model size limit of 100 bytes"
    assert pipeline.cached_paths() == []


def test_concurrent_misses_load_once(make_server):
    pipeline = make_server(4, 0)
    body = (Path(__file__).parents[2] / "example" / "post-data.json").read_bytes()
    start = threading.Barrier(8)
    results, errors = [], []

    def request():
        start.wait()
        try:
            results.append(json.loads(pipeline.serve("model-example.pt", "model-example.pt", body, 0.0)))
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(r == results[0] for r in results) and len(results) == 8
    assert pipeline.stats()["loads"] == 1
    assert pipeline.stats()["hits"] == 7


def test_concurrent_failed_loads_are_never_cached(make_server):
    pipeline = make_server(4, 0)
    start = threading.Barrier(6)
    errors = []

    def request():
        start.wait()
        try:
            pipeline.serve("corrupt.pt", "corrupt.pt", BODY, 0.0)
        except ModelLoadError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 6 and all(e.startswith("corrupt.pt is not a loadable TorchScript module") for e in errors)
    assert pipeline.cached_paths() == []
    assert pipeline.stats()["failed_loads"] == pipeline.stats()["loads"] >= 1


def test_model_evicted_while_in_use_finishes_its_request(make_server):
    pipeline = make_server(1, 0)
    body = body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": 3000})
    outcome = {}

    def run_slow():
        outcome["value"] = answer(pipeline, "slow.pt", body=body)

    worker = threading.Thread(target=run_slow)
    worker.start()
    while "slow.pt" not in names(pipeline):
        pass
    assert answer(pipeline, "tiny.pt") == [3, 5]
    assert names(pipeline) == ["tiny.pt"]
    worker.join()
    assert outcome["value"] == [2]


def test_gil_is_released_while_a_model_runs(make_server):
    pipeline = make_server(1, 0)
    body = body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": 2000})
    answer(pipeline, "slow.pt", body=body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": 1}))
    worker = threading.Thread(target=answer, args=(pipeline, "slow.pt"), kwargs={"body": body})
    ticks = 0
    worker.start()
    # With the GIL held by the native call, this loop could not run until
    # the request ended, and would count next to nothing.
    while worker.is_alive():
        ticks += 1
    assert ticks > 10_000


def test_invalidation_probability_reloads_and_keeps_answers(plus, make_server):
    pipeline = make_server(2, 0)
    for _ in range(3):
        assert answer(pipeline, plus[1], prob=1.0) == [2, 3]
    assert pipeline.stats()["loads"] == 3
    for _ in range(3):
        answer(pipeline, plus[1], prob=0.0)
    assert pipeline.stats()["loads"] == 3


def test_file_replaced_by_a_broken_one_is_refused_then_recovers(tmp_path, model_root, plus, make_server):
    pipeline = make_server(2, 0, tmp_path)
    path = tmp_path / "m.pt"
    shutil.copy(model_root / plus[2], path)
    assert answer(pipeline, "m.pt") == [3, 4]
    identity = path.stat()
    path.write_bytes(b"x" * identity.st_size)  # same size, new mtime: a new file
    with pytest.raises(ModelLoadError):
        answer(pipeline, "m.pt")
    assert pipeline.cached_paths() == []
    shutil.copy(model_root / plus[4], path)
    assert answer(pipeline, "m.pt") == [5, 6]


def test_replaced_file_is_a_new_model(tmp_path, model_root, plus, make_server):
    pipeline = make_server(2, 0, tmp_path)
    path = tmp_path / "m.pt"
    shutil.copy(model_root / plus[0], path)
    assert answer(pipeline, "m.pt") == [1, 2]
    staged = tmp_path / "staged.pt"
    shutil.copy(model_root / plus[5], staged)
    staged.replace(path)  # atomic rename
    assert answer(pipeline, "m.pt") == [6, 7]
    script_and_save(AffineModel(10.0, 0.0), path)  # rewritten in place
    assert answer(pipeline, "m.pt") == [10, 20]
    assert names(pipeline) == ["m.pt"]


def test_deleted_file_is_not_found(tmp_path, model_root, plus, make_server):
    pipeline = make_server(2, 0, tmp_path)
    path = tmp_path / "m.pt"
    shutil.copy(model_root / plus[0], path)
    answer(pipeline, "m.pt")
    path.unlink()
    with pytest.raises(ModelNotFoundError, match="no model file m.pt under the model root"):
        answer(pipeline, "m.pt")


def test_abandoned_work_keeps_its_pipeline_alive(model_root):
    executor = Executor(1)
    pipeline = Pipeline(str(model_root), 2, 0)
    slow = body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": 2000})
    with pytest.raises(DeadlineError):
        pipeline.serve("slow.pt", "slow.pt", slow, executor=executor, timeout=0.05)
    # The caller lets go of the Pipeline while its abandoned call still runs
    # on it; the call holds its own reference, so nothing is freed under it.
    del pipeline
    gc.collect()
    fresh = Pipeline(str(model_root), 2, 0)
    # Queued behind the abandoned call on the only thread.
    value = json.loads(fresh.serve("tiny.pt", "tiny.pt", BODY, executor=executor, timeout=60))
    assert value["result"]["value"] == [3, 5]


def test_files_mistaken_for_torchscript_say_what_they_are(tmp_path):
    from tests.packages import build_packages

    torch.save({"weight": torch.ones(2)}, tmp_path / "state_dict.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pt")
    shutil.copy(build_packages()["plain.pt2"], tmp_path / "renamed.pt")
    pipeline = Pipeline(str(tmp_path), 2, 0)
    saved = (
        "it is a torch.save() file (weights or a pickled module), not TorchScript: save the model with"
        " torch.jit.script(model).save(path), or package it as a .pt2 with torch_serving.package(...)"
    )
    for name, what in [
        ("state_dict.pt", saved),
        ("pickled_module.pt", saved),
        ("renamed.pt", "it is an AOTInductor package: name it .pt2"),
    ]:
        with pytest.raises(ModelLoadError) as error:
            pipeline.metadata(name, name)
        assert str(error.value) == f"{name} is not a loadable TorchScript module: {what}"
