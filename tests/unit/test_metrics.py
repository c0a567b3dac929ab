"""The metrics of one worker, in process: what its sampler copies from the native counters."""

from __future__ import annotations

import torch

from tests.conftest import body_of, tensor_json
from tests.models import AffineModel, script_and_save
from torch_serving import Pipeline, RequestBody
from torch_serving.metrics import Metrics


def test_the_executions_of_a_model_evicted_before_a_sample_are_counted(tmp_path):
    script_and_save(AffineModel(), tmp_path / "a.pt")
    script_and_save(AffineModel(2.0, 0.0), tmp_path / "b.pt")
    pipeline = Pipeline(str(tmp_path), 1, 0)  # room for one model
    metrics = Metrics(pipeline)
    body = RequestBody(body_of(tensor_json(torch.tensor([1.0]))))
    for _ in range(2):
        pipeline.serve("a.pt", "a.pt", body)
    pipeline.serve("b.pt", "b.pt", body)  # evicts a.pt before the sampler ran
    assert list(pipeline.stats()["models"]) == ["b.pt"]
    pipeline.serve("a.pt", "a.pt", body)  # loaded again, counting on
    exposition = metrics.exposition().decode()
    assert 'nv_inference_exec_count_total{model="a.pt",version="1"} 3.0' in exposition
    assert 'nv_inference_exec_count_total{model="b.pt",version="1"} 1.0' in exposition
    assert "torch_serving_cache_evictions_total 2.0" in exposition
