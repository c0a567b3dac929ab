"""Dynamic batching declared by a model's torch_serving.json: which requests
share a forward, that each gets its own rows, and what happens when a
batch cannot run or be split.

Requests are sent from threads at once to models that wait 300 ms for a
batch to fill, so the batches they form do not depend on timing."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.conftest import body_of, tensor_json
from tests.models import BatchLinearModel, script_and_save
from torch_serving import ExecutionError, Executor, Pipeline


@pytest.fixture
def pipeline(model_root) -> Pipeline:
    return Pipeline(str(model_root), 16, 2)


def serve_at_once(pipeline: Pipeline, identifier: str, bodies: list[bytes]) -> list[object]:
    """Serve ``bodies`` from one thread each, at once; return each result or the error raised."""
    executor = Executor(len(bodies))

    def call(body: bytes) -> object:
        try:
            return json.loads(pipeline.serve(identifier, identifier, body, 0.0, executor, 30.0))["result"]
        except Exception as error:  # returned, so each request's outcome is checked
            return error

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(call, bodies))


def counters(pipeline: Pipeline, identifier: str) -> dict:
    stats = pipeline.stats()["models"][identifier]
    return {key: stats[key] for key in ("requests", "executions", "max_batch_size")}


def linear_rows(x: torch.Tensor) -> list[float]:
    with torch.inference_mode():
        return BatchLinearModel()(x).flatten().tolist()


def assert_close(received: list[float], expected: list[float]) -> None:
    assert received == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_concurrent_requests_share_one_forward_and_each_gets_its_own_rows(pipeline):
    inputs = [torch.arange(4.0).reshape(1, 4) + k for k in range(4)] + [torch.arange(8.0).reshape(2, 4) * -1]
    results = serve_at_once(pipeline, "batch_linear.pt", [body_of(tensor_json(x)) for x in inputs])
    for x, result in zip(inputs, results):
        assert result["shape"] == [x.shape[0], 3]
        assert_close(result["value"], linear_rows(x))
    assert counters(pipeline, "batch_linear.pt") == {"requests": 5, "executions": 1, "max_batch_size": 8}
    # What that forward of six rows cost, as the scheduler weighs batch sizes by it.
    forward_ms = pipeline.stats()["models"]["batch_linear.pt"]["forward_ms_by_rows"]
    assert list(forward_ms) == [6] and forward_ms[6] > 0


def test_tensors_nested_in_lists_and_dicts_are_merged_and_split(pipeline):
    def body(k: float) -> bytes:
        pair = {"type": "tensor_list", "value": [tensor_json(torch.full((1, 2), k)), tensor_json(torch.ones(1, 2))]}
        named = {
            "type": "tensor_dict",
            "value": {"a": tensor_json(torch.full((1, 2), k)), "b": tensor_json(torch.ones(1, 2))},
        }
        return body_of(pair, named)

    results = serve_at_once(pipeline, "batch_structures.pt", [body(k) for k in (1.0, 2.0, 3.0)])
    for k, result in zip((1.0, 2.0, 3.0), results):
        total, named = result
        assert total["value"] == [k + 1, k + 1]
        assert named == {"type": "generic_dict", "value": {"sum": {**total, "value": [k + 1, k + 1]}}}
    assert counters(pipeline, "batch_structures.pt")["executions"] == 1


def test_requests_of_other_shapes_or_unequal_scalars_are_not_merged(pipeline):
    factor = {"type": "scalar", "data_type": "float64", "value": 2.0}
    bodies = [
        body_of(tensor_json(torch.ones(1, 3)), factor),
        body_of(tensor_json(torch.ones(1, 3) * 2), factor),  # merges with the first
        body_of(tensor_json(torch.ones(1, 2)), factor),  # another shape
        body_of(tensor_json(torch.ones(1, 3)), {**factor, "value": 3.0}),  # another factor
        body_of(tensor_json(torch.ones(1, 3), "float64"), factor),  # another dtype
    ]
    results = serve_at_once(pipeline, "batch_scale.pt", bodies)
    assert [r["value"] for r in results] == [[2.0] * 3, [4.0] * 3, [2.0] * 2, [3.0] * 3, [2.0] * 3]
    assert [r["data_type"] for r in results] == ["float32"] * 4 + ["float64"]
    assert counters(pipeline, "batch_scale.pt") == {"requests": 5, "executions": 4, "max_batch_size": 8}


def test_a_bad_request_among_good_ones_fails_alone(pipeline):
    values = [[1.0, 2.0], [3.0, -4.0], [5.0, 6.0]]
    results = serve_at_once(pipeline, "batch_scale.pt", [body_of(tensor_json(torch.tensor([v]))) for v in values])
    assert results[0]["value"] == [2.0, 4.0]
    assert results[2]["value"] == [10.0, 12.0]
    assert isinstance(results[1], ExecutionError)
    assert str(results[1]) == "forward raised: builtins.ValueError: negative input"
    # The merged forward failed, then each request ran alone.
    assert counters(pipeline, "batch_scale.pt")["executions"] == 4


def test_a_body_that_does_not_decode_never_joins_a_batch(pipeline):
    bodies = [
        body_of(tensor_json(torch.ones(1, 4))),
        b'{"type": "tensor", "value": [1, 2',
        body_of(tensor_json(torch.ones(1, 4) * 2)),
    ]
    results = serve_at_once(pipeline, "batch_linear.pt", bodies)
    assert_close(results[0]["value"], linear_rows(torch.ones(1, 4)))
    assert_close(results[2]["value"], linear_rows(torch.ones(1, 4) * 2))
    assert isinstance(results[1], ValueError)
    assert counters(pipeline, "batch_linear.pt") == {"requests": 2, "executions": 1, "max_batch_size": 8}


def test_batches_hold_at_most_max_batch_size_rows(pipeline):
    inputs = [torch.full((1, 4), float(k)) for k in range(4)] + [torch.ones(3, 4)]
    results = serve_at_once(pipeline, "batch_two_rows.pt", [body_of(tensor_json(x)) for x in inputs])
    for x, result in zip(inputs, results):
        assert_close(result["value"], linear_rows(x))
    # Four single rows in pairs, and three rows (over the limit) alone.
    assert counters(pipeline, "batch_two_rows.pt")["executions"] == 3


def test_arguments_returned_as_they_are_go_to_every_request_of_the_batch(pipeline):
    def body(k: float, label: str) -> bytes:
        return body_of(tensor_json(torch.full((1, 2), k)), {"type": "string", "value": label})

    results = serve_at_once(pipeline, "batch_label.pt", [body(1.0, "a"), body(2.0, "a"), body(3.0, "b")])
    assert [(doubled["value"], label["value"]) for doubled, label in results] == [
        ([2.0, 2.0], "a"),
        ([4.0, 4.0], "a"),
        ([6.0, 6.0], "b"),
    ]
    # Unequal labels are not merged: "a" shared a forward, "b" ran alone.
    assert counters(pipeline, "batch_label.pt")["executions"] == 2


def test_an_output_that_cannot_be_split_is_answered_per_request_and_logged_once(pipeline, caplog):
    caplog.set_level(logging.WARNING, logger="torch_serving")
    for _ in range(2):
        results = serve_at_once(
            pipeline, "batch_count.pt", [body_of(tensor_json(torch.full((1, 2), float(k)))) for k in range(3)]
        )
        for k, (plus_one, rows) in enumerate(results):
            assert plus_one["value"] == [k + 1.0, k + 1.0]
            assert rows == {"type": "scalar", "data_type": "int64", "value": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "model batch_count.pt declares batching, but its output holds a value of type int, which has no batch"
        " dimension; its batches are answered one request at a time"
    ]
    assert counters(pipeline, "batch_count.pt")["executions"] == 8  # per round: one merged forward, three alone


def test_a_lone_request_waits_at_most_the_declared_delay(pipeline):
    body = body_of(tensor_json(torch.ones(1, 4)))
    for identifier, delay_s in [("batch_linear.pt", 0.3), ("batch_linear_eager.pt", 0.0)]:
        serve_at_once(pipeline, identifier, [body])  # loaded
        started = time.monotonic()
        serve_at_once(pipeline, identifier, [body])
        waited = time.monotonic() - started
        assert delay_s * 0.9 <= waited < delay_s + 1.0


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ('{"max_batch_size": "eight"}', 'max_batch_size must be an integer of at least 1, got "eight"'),
        ('{"max_batch_size": 0}', "max_batch_size must be an integer of at least 1, got 0"),
        (
            '{"max_batch_size": 8, "max_batch_delay_ms": -1}',
            "max_batch_delay_ms must be a number of at least 0, got -1",
        ),
        (
            '{"max_batch_size": 8, "max_batch_wait": 1}',
            'unknown key "max_batch_wait"; the keys are max_batch_size, max_batch_delay_ms and instance_count',
        ),
        ('{"max_batch_delay_ms": 1}', "max_batch_size is missing"),
        (
            "[8]",
            'it must be a JSON object, like {"max_batch_size": 8, "max_batch_delay_ms": 0, "instance_count": 1}',
        ),
        ("max_batch_size: 8", "it is not valid JSON"),
    ],
)
def test_a_malformed_policy_is_logged_and_the_model_served_unbatched(tmp_path, caplog, policy, problem):
    caplog.set_level(logging.WARNING, logger="torch_serving")
    script_and_save(BatchLinearModel(), tmp_path / "m.pt", policy)
    pipeline = Pipeline(str(tmp_path), 2, 0)
    results = serve_at_once(pipeline, "m.pt", [body_of(tensor_json(torch.ones(1, 4) * k)) for k in range(3)])
    assert [r["shape"] for r in results] == [[1, 3]] * 3
    assert counters(pipeline, "m.pt") == {"requests": 3, "executions": 3, "max_batch_size": 0}
    assert [r.getMessage() for r in caplog.records] == [
        f"model m.pt has a malformed torch_serving.json ({problem}); it is served without batching"
    ]


def test_a_model_without_the_file_does_not_batch(pipeline):
    results = serve_at_once(pipeline, "tiny.pt", [body_of(tensor_json(torch.ones(1, 2) * k)) for k in range(3)])
    assert [r["value"] for r in results] == [[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]]
    assert counters(pipeline, "tiny.pt") == {"requests": 3, "executions": 3, "max_batch_size": 0}


def infer_body(x: torch.Tensor) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.flatten().tolist()}]}
    ).encode()


def test_v2_inference_batches_and_its_config_reports_max_batch_size(pipeline):
    executor = Executor(4)
    inputs = [torch.full((1, 4), float(k)) for k in range(4)]

    def call(x: torch.Tensor) -> dict:
        response, _ = pipeline.infer("batch_linear.pt", "batch_linear", infer_body(x), -1, executor, 30.0)
        return json.loads(response)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(call, inputs))
    for x, response in zip(inputs, responses):
        assert_close(response["outputs"][0]["data"], linear_rows(x))
    assert counters(pipeline, "batch_linear.pt")["executions"] == 1
    assert json.loads(pipeline.config("batch_linear.pt", "batch_linear")) == {
        "name": "batch_linear",
        "platform": "pytorch_libtorch",
        "backend": "pytorch",
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [-1]}],
        # the Pipeline's default: one instance.
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }
    assert json.loads(pipeline.config("tiny.pt", "tiny"))["max_batch_size"] == 0
