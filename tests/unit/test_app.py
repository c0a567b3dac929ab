"""The Falcon app through Falcon's test client: every status of the protocol."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import falcon.testing
import pytest
import torch

import torch_serving.app
from tests.conftest import WARM_UP_ROUNDS, body_of, nested_groups_body, rounds_body, tensor_json
from torch_serving import Config, create_app

TINY = "servable_identifier=tiny.pt"


@pytest.fixture
def config(model_root) -> Config:
    return Config(model_root=model_root, model_capacity=2, buffer_size=1, max_body_size=4096)


@pytest.fixture
def client(config) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(config))


def serve(client, query: str, body: bytes, **kwargs) -> falcon.testing.Result:
    return client.simulate_post("/serve", query_string=query, body=body, **kwargs)


def tiny_body(*values: float) -> bytes:
    return body_of(tensor_json(torch.tensor([list(values)])))


def assert_error(result, status: int, description: str, detail: str) -> None:
    assert result.status_code == status
    assert result.headers["content-type"] == "application/json"
    message = "Client Error" if status < 500 else "Server Error"
    assert result.json == {"code": status, "message": message, "description": description, "detail": detail}


def cached_names(client) -> list[str]:
    return client.simulate_get("/cache").json["models"]


def test_healthcheck(client):
    result = client.simulate_get("/healthcheck")
    assert result.status_code == 200
    assert result.json == {"code": 200, "message": "OK", "description": "OK"}


def test_example_request_as_form_urlencoded(client, example_body, example_expected):
    result = serve(
        client,
        "servable_identifier=model-example.pt",
        example_body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert result.status_code == 200
    doc = result.json
    assert {k: doc[k] for k in ("code", "message", "description")} == {
        "code": 200,
        "message": "OK",
        "description": "Success",
    }
    assert doc["result"]["type"] == "generic_dict"
    (tensors, text, number) = doc["result"]["value"]["out"]
    assert [t["shape"] for t in tensors] == [[1, 3], [1, 3]]
    assert all(t["data_type"] == "float32" for t in tensors)
    assert tensors[1]["value"] == [60, 33, 33] == example_expected["second"]
    assert tensors[0]["value"] == pytest.approx(example_expected["first"], rel=1e-6)
    assert text == {"type": "string", "value": "Hello!"}
    assert number == {"type": "scalar", "data_type": "int64", "value": 30}


def test_tiny_model_and_nested_identifier(client):
    assert serve(client, "servable_identifier=tiny.pt", tiny_body(1, 2)).json["result"]["value"] == [3, 5]
    result = serve(client, "servable_identifier=nested/triple.pt", tiny_body(1, 2))
    assert result.json["result"]["value"] == [3, 6]


def test_defaults_optional_and_int_to_float(client):
    body = body_of(
        {"type": "list", "value": [{"type": "scalar", "value": 1}, {"type": "scalar", "value": 2}]},
        {"type": "scalar", "value": 3},
        {"type": "scalar", "value": True},
    )
    result = serve(client, "servable_identifier=kinds.pt", body)
    assert result.status_code == 200
    assert result.json["result"] == [
        [{"type": "scalar", "data_type": "int64", "value": 1}, {"type": "scalar", "data_type": "int64", "value": 2}],
        {"type": "scalar", "data_type": "float64", "value": 3},
        {"type": "scalar", "data_type": "bool", "value": True},
        {"type": "none", "value": None},
        {"type": "string", "value": "default"},
    ]
    empty_list = body_of(
        {"type": "list", "value": []},
        {"type": "scalar", "value": 0.5},
        {"type": "scalar", "value": False},
        {"type": "none"},
        {"type": "string", "value": "s"},
    )
    assert serve(client, "servable_identifier=kinds.pt", empty_list).json["result"][0] == []


def test_dict_output_with_int_keys(client):
    body = body_of({"type": "tensor_dict", "value": {"a": tensor_json(torch.ones(2)), "b": tensor_json(torch.ones(3))}})
    result = serve(client, "servable_identifier=dict.pt", body).json["result"]
    assert result[0]["value"]["total"]["value"] == [5]
    assert result[1] == {"type": "generic_dict", "value": {"2": {"type": "string", "value": "count"}}}


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("", "missing query parameter servable_identifier"),
        ("servable_identifier=", "servable_identifier is empty"),
        (
            "servable_identifier=tiny.pt&servable_identifier=echo.pt",
            "query parameter servable_identifier is repeated; give it once",
        ),
        (
            "servable_identifier=/etc/passwd",
            "servable_identifier must be relative to the model root, got '/etc/passwd'",
        ),
        (
            "servable_identifier=../models/tiny.pt",
            "servable_identifier must not contain '..' components, got '../models/tiny.pt'",
        ),
        (
            "servable_identifier=nested/../tiny.pt",
            "servable_identifier must not contain '..' components, got 'nested/../tiny.pt'",
        ),
        ("servable_identifier=tiny.pt%00.txt", "servable_identifier contains a NUL character"),
    ],
)
def test_bad_identifiers_are_400(client, query, detail):
    assert_error(serve(client, query, tiny_body(1)), 400, "Invalid servable identifier", detail)


@pytest.mark.parametrize("value", ["-0.1", "1.5", "abc", "nan", "inf", ""])
def test_bad_invalidation_prob_is_400(client, value):
    result = serve(client, f"servable_identifier=tiny.pt&invalidation_prob={value}", tiny_body(1))
    assert_error(result, 400, "Invalid parameter", f"invalidation_prob must be a number in [0, 1], got {value!r}")


def test_an_unknown_query_parameter_is_400_naming_it(client):
    result = serve(client, "servable_identifier=tiny.pt&invalidation_probability=1", tiny_body(1))
    assert_error(
        result,
        400,
        "Invalid parameter",
        "unknown query parameter 'invalidation_probability'; /serve takes servable_identifier and invalidation_prob",
    )


def test_body_errors_are_400(client):
    assert_error(
        serve(client, "servable_identifier=tiny.pt", b""), 400, "Invalid request body", "request body is empty"
    )
    assert_error(
        serve(client, "servable_identifier=tiny.pt", b"\xc3\x28"),
        400,
        "Invalid request body",
        "request body is not valid UTF-8",
    )
    result = serve(client, "servable_identifier=tiny.pt", b'{"type": "tensor", "value": [1], "data_type": "int4"}')
    assert result.status_code == 400
    assert result.json["detail"].startswith('unknown data_type "int4"')


@pytest.mark.parametrize(
    ("model", "signature"),
    [
        ("pair.pt", "forward(a: Tensor, b: Tensor, scale: float = 1.0) -> Tuple[Tensor, Tensor]"),
        (
            "kinds.pt",
            "forward(ints: List[int], ratio: float, flag: bool, maybe: Optional[Tensor] = None, label: str = 'default') "
            "-> Tuple[List[int], float, bool, Optional[Tensor], str]",
        ),
        ("dict.pt", "forward(inputs: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[int, str]]"),
    ],
)
def test_signatures_are_written_as_python(client, model, signature):
    six = body_of(*[{"type": "none"}] * 6)
    detail = serve(client, f"servable_identifier={model}", six).json["detail"]
    assert detail.endswith(f"received 6; signature: {signature}")


def test_signature_mismatches_are_400_naming_the_argument(client):
    assert_error(
        serve(client, "servable_identifier=tiny.pt", body_of({"type": "string", "value": "x"})),
        400,
        "Inputs do not match the model",
        "argument 'x' (position 0) of forward expects Tensor, received str",
    )
    too_many = body_of(tensor_json(torch.ones(1)), tensor_json(torch.ones(1)))
    result = serve(client, "servable_identifier=tiny.pt", too_many)
    assert result.status_code == 400
    assert (
        result.json["detail"]
        == "forward takes at most 1 argument(s), received 2; signature: forward(x: Tensor) -> Tensor"
    )
    assert_error(
        serve(client, "servable_identifier=kinds.pt", body_of({"type": "list", "value": []})),
        400,
        "Inputs do not match the model",
        "missing argument 'ratio' (position 1) of forward, which expects float; received 1 argument(s)",
    )


def test_model_raising_is_400(client):
    result = serve(client, "servable_identifier=raising.pt", tiny_body(-1, -2))
    assert result.status_code == 400
    assert result.json["description"] == "Model failed on the inputs"
    assert "inputs must not sum to a negative number" in result.json["detail"]
    assert "Traceback" not in result.json["detail"]
    shape_error = serve(client, "servable_identifier=echo.pt", tiny_body(1))
    assert shape_error.status_code == 200


@pytest.mark.parametrize("name", ["missing.pt", "folder.pt", "nested"])
def test_missing_files_and_directories_are_404(client, name):
    assert_error(
        serve(client, f"servable_identifier={name}", tiny_body(1)),
        404,
        "Model not found",
        f"no model file {name} under the model root",
    )


def test_symlink_out_of_the_root_is_404_like_a_missing_file(client, model_root, tmp_path):
    outside = tmp_path / "outside.pt"
    outside.write_bytes((model_root / "tiny.pt").read_bytes())
    link = model_root / "escape.pt"
    link.symlink_to(outside)
    try:
        result = serve(client, "servable_identifier=escape.pt", tiny_body(1))
        assert_error(result, 404, "Model not found", "no model file escape.pt under the model root")
    finally:
        link.unlink()


def test_symlink_inside_the_root_is_served(client, model_root):
    link = model_root / "alias.pt"
    link.symlink_to(model_root / "tiny.pt")
    try:
        assert serve(client, "servable_identifier=alias.pt", tiny_body(1)).json["result"]["value"] == [3]
    finally:
        link.unlink()


def test_oversized_body_is_413_before_reading(client):
    body = b" " * 5000
    assert_error(
        serve(client, "servable_identifier=tiny.pt", body),
        413,
        "Request body too large",
        "body of 5000 bytes exceeds the limit of 4096 bytes",
    )


@pytest.mark.parametrize("name", ["corrupt.pt", "state_dict.pt"])
def test_unloadable_files_are_422_and_not_cached(client, name):
    result = serve(client, f"servable_identifier={name}", tiny_body(1))
    assert result.status_code == 422
    assert result.json["description"] == "Model not loadable"
    assert result.json["detail"].startswith(f"{name} is not a loadable TorchScript module: ")
    assert "/" not in result.json["detail"].split(": ", 1)[1].replace("N/A", "")
    assert name not in cached_names(client)


def test_unencodable_output_is_500_naming_the_type(client):
    assert_error(
        serve(client, "servable_identifier=complex.pt", tiny_body(1)),
        500,
        "Unsupported model output",
        "cannot encode a tensor of dtype ComplexFloat at result",
    )


def test_unexpected_error_is_a_bare_500_with_the_trace_logged(client, monkeypatch, caplog):
    def explode(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(torch_serving.app, "read_body", lambda req, limit, deadline, before_continue: explode())
    with caplog.at_level(logging.ERROR, logger="torch_serving"):
        result = serve(client, "servable_identifier=tiny.pt", tiny_body(1))
    assert_error(result, 500, "Internal Server Error", "an unexpected error occurred; the server log has the details")
    assert "secret internals" not in result.text
    assert "secret internals" in caplog.text and "Traceback" in caplog.text


def test_unknown_route_and_method(client):
    assert_error(client.simulate_get("/nope"), 404, "Not Found", "GET /nope: Not Found")
    result = client.simulate_get("/serve")
    assert result.status_code == 405
    assert result.json["description"] == "Method Not Allowed"
    assert "POST" in result.headers["allow"]


def test_failed_requests_never_disturb_the_cache_or_later_answers(client):
    assert serve(client, TINY, tiny_body(1)).json["result"]["value"] == [3]
    assert serve(client, "servable_identifier=echo.pt", tiny_body(1)).status_code == 200
    before = cached_names(client)
    failures = [
        ("servable_identifier=corrupt.pt", tiny_body(1)),
        ("servable_identifier=missing.pt", tiny_body(1)),
        (TINY, b"[1"),
        (TINY, body_of({"type": "string", "value": "x"})),
        ("servable_identifier=raising.pt", tiny_body(-5)),
    ]
    for query, body in failures:
        assert serve(client, query, body).status_code >= 400
    # raising.pt loaded fine, so it is cached; the signature mismatch used
    # tiny.pt, so it moved up; nothing was evicted.
    assert before == ["echo.pt", "tiny.pt"]
    assert cached_names(client) == ["raising.pt", "tiny.pt", "echo.pt"]
    assert serve(client, TINY, tiny_body(1)).json["result"]["value"] == [3]


def test_response_is_valid_json_with_specials(client):
    result = serve(
        client, "servable_identifier=echo.pt", body_of({"type": "tensor", "value": ["NaN", "-Infinity", 1.5]})
    )
    assert json.loads(result.text)["result"]["value"] == ["NaN", "-Infinity", 1.5]


def test_cache_endpoint_lists_models_relative_to_the_root(client, config):
    serve(client, TINY, tiny_body(1))
    serve(client, "servable_identifier=nested/triple.pt", tiny_body(1))
    serve(client, TINY, tiny_body(1))
    doc = client.simulate_get("/cache").json
    assert doc["models"] == ["tiny.pt", "nested/triple.pt"]
    # One request at a time: one forward ran at once.
    unbatched = {"max_batch_size": 0, "instances": config.threads, "peak_running": 1, "forward_ms_by_rows": {}}
    assert doc["stats"] == {
        "hits": 1,
        "loads": 2,
        "failed_loads": 0,
        "evictions": 0,
        "models": {
            "tiny.pt": {**unbatched, "requests": 2, "executions": 2},
            "nested/triple.pt": {**unbatched, "requests": 1, "executions": 1},
        },
        "failed": {},
    }


def test_invalidation_prob_reloads_from_disk(client):
    for _ in range(3):
        assert serve(client, TINY + "&invalidation_prob=1", tiny_body(1)).json["result"]["value"] == [3]
    serve(client, TINY + "&invalidation_prob=0", tiny_body(1))
    stats = client.simulate_get("/cache").json["stats"]
    assert stats["loads"] == 3 and stats["hits"] == 3


def test_deadline_answers_504_then_a_full_worker_answers_503(model_root):
    config = Config(model_root=model_root, threads=1, queue_size=0, timeout=0.3)
    client = falcon.testing.TestClient(create_app(config))
    assert serve(client, "servable_identifier=slow.pt", rounds_body(WARM_UP_ROUNDS)).json["result"]["value"] == [2]
    assert_error(
        serve(client, "servable_identifier=slow.pt", rounds_body(20_000)),
        504,
        "Deadline exceeded",
        "the request did not finish within the 0.3 s deadline; its work was abandoned",
    )
    # The abandoned forward still holds the worker's only slot.
    busy = serve(client, TINY, tiny_body(1))
    assert_error(
        busy, 503, "Server busy", "this worker holds 1 requests, its limit (--threads + --queue-size); retry later"
    )
    assert busy.headers["retry-after"] == "1"
    for _ in range(600):
        result = serve(client, TINY, tiny_body(1))
        if result.status_code == 200:
            break
        time.sleep(0.05)
    assert result.json["result"]["value"] == [3]
    assert cached_names(client) == ["tiny.pt", "slow.pt"]


def test_requests_queue_for_a_slot_within_the_limit(model_root):
    config = Config(model_root=model_root, threads=1, queue_size=4, timeout=30)
    client = falcon.testing.TestClient(create_app(config))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: serve(client, "servable_identifier=slow.pt", rounds_body(50)), range(4)))
    assert [r.status_code for r in results] == [200] * 4


def test_a_forward_that_runs_out_of_memory_answers_503(client):
    body = body_of({"type": "scalar", "value": 1 << 50})
    result = serve(client, "servable_identifier=allocating.pt", body)
    assert result.status_code == 503
    assert result.headers["retry-after"] == "1"
    assert result.json["description"] == "Server out of resources"
    assert result.json["detail"].startswith("forward ran out of memory: ")
    assert "can't allocate memory" in result.json["detail"]
    # The worker serves on.
    assert serve(client, TINY, tiny_body(1)).json["result"]["value"] == [3]


# Serves `identifiers` from an app built in a fresh interpreter, after `prelude`
# ran there (dropping privileges or descriptors the test process must keep).
_SERVE_AFTER = """
import json, os, resource, sys
from pathlib import Path
import falcon.testing
from torch_serving import Config, create_app
client = falcon.testing.TestClient(create_app(Config(model_root=Path(sys.argv[1]))))
{prelude}
body = sys.stdin.buffer.read()
answers = []
for identifier in sys.argv[2:]:
    result = client.simulate_post("/serve", params={{"servable_identifier": identifier}}, body=body)
    answers.append([result.status_code, result.json, result.headers.get("retry-after")])
print(json.dumps(answers))
"""


def serve_after(prelude: str, root: Path, *identifiers: str) -> list:
    script = _SERVE_AFTER.format(prelude=prelude)
    done = subprocess.run(
        [sys.executable, "-c", script, str(root), *identifiers],
        input=tiny_body(1),
        capture_output=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_model_files_the_server_may_not_read_answer_500_not_404(model_root, tmp_path):
    root = tmp_path / "root"
    (root / "locked").mkdir(parents=True)
    for name in ["unreadable.pt", "locked/tiny.pt"]:
        shutil.copy(model_root / "tiny.pt", root / name)
    (root / "unreadable.pt").chmod(0)
    (root / "locked").chmod(0)
    # Root reads everything: the app drops to an unprivileged user after it starts.
    prelude = "os.setgid(65534); os.setuid(65534)" if os.geteuid() == 0 else ""
    try:
        answers = serve_after(prelude, root, "unreadable.pt", "locked/tiny.pt")
    finally:
        (root / "locked").chmod(0o755)
    for (status, document, _), name in zip(answers, ["unreadable.pt", "locked/tiny.pt"]):
        assert status == 500
        assert document == {
            "code": 500,
            "message": "Server Error",
            "description": "Model not readable",
            "detail": f"the server may not read model file {name}: Permission denied",
        }


def test_a_server_out_of_descriptors_answers_503(model_root):
    # The next descriptor the process opens would pass the limit: opening the model fails with EMFILE.
    prelude = """
lowest = os.open("/dev/null", os.O_RDONLY)
os.close(lowest)
limits = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, limits[1]))
"""
    [(status, document, retry_after)] = serve_after(prelude, model_root, "tiny.pt")
    assert status == 503
    assert retry_after == "1"
    assert document == {
        "code": 503,
        "message": "Server Error",
        "description": "Server out of resources",
        "detail": "the server could not open model file tiny.pt: Too many open files",
    }


def test_head_answers_wherever_get_does(client):
    for path in ["/healthcheck", "/cache"]:
        got, head = client.simulate_get(path), client.simulate_head(path)
        assert head.status_code == got.status_code == 200
        assert head.content == b""


def test_a_byte_order_mark_before_the_body_is_skipped(client):
    assert serve(client, TINY, b"\xef\xbb\xbf" + tiny_body(1, 2)).json["result"]["value"] == [3, 5]


def test_an_error_detail_is_cut_on_a_character_boundary(client):
    body = ('{"type": "tensor", "value": ["a' + "\u00e9" * 20 + '"]}').encode()
    assert_error(
        serve(client, TINY, body),
        400,
        "Invalid request body",
        'expected a finite number within the range of float32 or "NaN", "Infinity", "-Infinity", found string "a'
        + "\u00e9" * 19
        + '..." at body.value[0]',
    )


def test_nested_lists_of_tensors_reach_the_model(client):
    result = serve(client, "servable_identifier=nested_groups.pt", nested_groups_body())
    assert result.json["result"]["value"] == [11]
