"""KServe's own Python SDK against a real gunicorn, as a new user would call it: its
InferenceRESTClient over the V2 protocol (readiness, JSON and binary inference, the body's
model_name) and over V1 (liveness, model readiness, predict), and its InferenceGRPCClient."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.integration.server import free_port, serving
from tests.models import REPO, example_script

GRPC_PORT = free_port()


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    options = ["--model-root", str(model_root), "--workers", "1", "--grpc-port", str(GRPC_PORT)]
    with serving(tmp_path_factory, "kserve", *options) as running_server:
        yield running_server


def call(server, method: str, *args, protocol: str = "v2", **kwargs):
    """Run one call of a fresh InferenceRESTClient (its methods are coroutines)."""

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=30))
        try:
            return await getattr(client, method)(server.url, *args, **kwargs)
        finally:
            await client.close()

    return asyncio.run(run())


def test_readiness(server):
    assert call(server, "is_server_live")
    assert call(server, "is_server_ready")
    assert call(server, "is_model_ready", "tiny")


@pytest.mark.parametrize("binary", [False, True])
def test_infer_json_and_binary(server, binary):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    tensor = InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    response = call(server, "infer", InferRequest(model_name="tiny", infer_inputs=[tensor]), model_name="tiny")
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), x * 2 + 1)


def test_a_body_naming_another_model_or_version_is_refused(server):
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]
    other = requests.post(
        server.url + "/v2/models/tiny/infer", json={"model_name": "scale", "inputs": inputs}, timeout=30
    )
    assert other.status_code == 400
    assert other.json() == {"error": 'the body\'s model_name "scale" is not the model of the URL, "tiny"'}
    version = requests.post(
        server.url + "/v2/models/tiny/infer",
        json={"model_name": "tiny", "model_version": "2", "inputs": inputs},
        timeout=30,
    )
    assert version.status_code == 400
    assert version.json() == {"error": 'the body\'s model_version "2" is not the model\'s version, "1"'}


def grpc_call(method: str, *args, **kwargs):
    """Run one call of a fresh InferenceGRPCClient on the server's gRPC port."""

    async def run():
        client = InferenceGRPCClient(f"127.0.0.1:{GRPC_PORT}", timeout=30)
        try:
            return await getattr(client, method)(*args, **kwargs)
        finally:
            await client.close()

    return asyncio.run(run())


def test_grpc_readiness_and_inference(server):
    assert grpc_call("is_server_live") and grpc_call("is_server_ready")
    assert grpc_call("is_model_ready", "tiny")
    assert not grpc_call("is_model_ready", "nope")
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    tensor = InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    response = grpc_call("infer", InferRequest(model_name="tiny", infer_inputs=[tensor], request_id="r-1"))
    assert (response.model_name, response.id) == ("tiny", "r-1")
    assert response.outputs[0].name == "OUTPUT__0"
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), x * 2 + 1)


def test_v1_liveness_readiness_and_predict(server):
    assert call(server, "is_server_live", protocol="v1")
    assert requests.get(server.url + "/", timeout=10).json() == {"status": "alive"}
    assert call(server, "is_model_ready", "tiny", protocol="v1")
    assert requests.get(server.url + "/v1/models/nested/triple", timeout=10).json() == {
        "name": "nested/triple",
        "ready": True,
    }
    instances = [[1.0, 2.0], [3.0, -4.5], [0.25, 8.0]]
    answer = call(server, "infer", {"instances": instances}, model_name="tiny", protocol="v1")
    assert answer == {"predictions": [[3.0, 5.0], [7.0, -8.0], [1.5, 17.0]]}


def test_v1_instances_naming_several_inputs_and_several_outputs(server):
    instances = [{"a": [1.0, 2.0], "b": [10.0, 20.0], "scale": 0.5}, {"a": [0.0, 1.0], "b": [2.0, 4.0], "scale": 0.5}]
    response = requests.post(server.url + "/v1/models/pair:predict", json={"instances": instances}, timeout=30)
    # pair's scale is one float for the whole call, which V1's rows cannot give: it says so.
    assert response.status_code == 400 and set(response.json()) == {"error"}
    answer = requests.post(
        server.url + "/v1/models/pair:predict",
        json={"instances": [{"a": row["a"], "b": row["b"]} for row in instances]},
        timeout=30,
    ).json()
    assert answer == {
        "predictions": [
            {"OUTPUT__0": [11.0, 22.0], "OUTPUT__1": [10.0, 40.0]},
            {"OUTPUT__0": [2.0, 5.0], "OUTPUT__1": [0.0, 4.0]},
        ]
    }


def test_v1_strings(server):
    answer = requests.post(
        server.url + "/v1/models/string_echo:predict", json={"instances": ["a", "ü", ""]}, timeout=30
    ).json()
    assert answer == {"predictions": ["a", "ü", ""]}


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/v1/models/nope:predict",
            {"instances": [[1.0]]},
            404,
            "no model file nope, nope.pt or nope.pt2 under the model root",
        ),
        (
            "/v1/models/tiny:predict",
            {"inputs": [[1.0]]},
            400,
            'a V1 predict request is {"instances": [...]} with at least one instance',
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": []},
            400,
            'a V1 predict request is {"instances": [...]} with at least one instance',
        ),
        (
            "/v1/models/tiny:predict",
            b"{",
            400,
            "the body is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": [[1.0, 2.0], [3.0]]},
            400,
            "the instances of input 'x' are not rows of one shape of FP32: setting an array element with a sequence. "
            "The requested array has an inhomogeneous shape after 1 dimensions. The detected shape was (2,) + "
            "inhomogeneous part.",
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": [{"y": [1.0]}]},
            400,
            "instance 0 names 'y', which is not among the model's inputs: x",
        ),
        (
            "/v1/models/tiny:predict",
            {"instances": [{"x": [1.0]}, {"x": [2.0], "z": [1.0]}]},
            400,
            "instance 1 names 'x', 'z', instance 0 'x': every instance names the same inputs",
        ),
        (
            "/v1/models/pair:predict",
            {"instances": [[1.0]]},
            400,
            "missing input for argument 'b' (position 1) of forward, which expects Tensor; signature: "
            "forward(a: Tensor, b: Tensor, scale: float = 1.0) -> Tuple[Tensor, Tensor]",
        ),
        (
            "/v1/models/pair:predict",
            {"instances": [{"a": [1.0], "b": [1.0]}, {"a": [1.0]}]},
            400,
            "instance 1 names 'a', instance 0 'a', 'b': every instance names the same inputs",
        ),
    ],
)
def test_v1_errors(server, path, body, status, error):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(server.url + path, data=data, timeout=30)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert requests.get(server.url + "/v1/models/nope", timeout=10).status_code == 404
    assert requests.get(server.url + "/v1/models/tiny:predict", timeout=10).status_code == 405


def test_v1_requests_share_a_batching_models_forwards(server):
    """Seven V1 requests queued behind a running forward of a batching model share the next one."""

    def predict(k: float) -> requests.Response:
        body = {"instances": [{"x": [k, k, k], "rounds": 600}]}
        return requests.post(server.url + "/v1/models/batch_slow:predict", json=body, timeout=60)

    def executions() -> int:
        models = requests.get(server.url + "/cache", timeout=10).json()["stats"]["models"]
        return models.get("batch_slow.pt", {}).get("executions", 0)

    with ThreadPoolExecutor(8) as pool:
        leader = pool.submit(predict, -1.0)
        deadline = time.monotonic() + 30
        while executions() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        answers = list(pool.map(predict, [float(k) for k in range(7)]))
        assert leader.result().json() == {"predictions": [[0.0, 0.0, 0.0]]}
    assert [answer.json() for answer in answers] == [{"predictions": [[k + 1.0] * 3]} for k in range(7)]
    assert executions() == 2


@pytest.fixture(scope="module")
def example_server(tmp_path_factory):
    """A server over the models `make serve` makes for the V2 examples, with gRPC, and its gRPC port."""
    root = tmp_path_factory.mktemp("kserve-example-root")
    example_script("create_v2_models").main(str(root))
    grpc_port = free_port()
    options = ["--model-root", str(root), "--workers", "1", "--grpc-port", str(grpc_port)]
    with serving(tmp_path_factory, "kserve-example", *options) as running_server:
        yield running_server, grpc_port


def test_the_documented_kserve_grpc_and_v1_examples_run_as_written(example_server, capsys):
    server, grpc_port = example_server
    docs = (REPO / "docs" / "v2.md").read_text()
    section = docs[docs.index("## Over gRPC") : docs.index("## KServe V1")]
    code = next(block for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "kserve" in block)
    capsys.readouterr()
    exec(compile(code.replace("localhost:8001", f"127.0.0.1:{grpc_port}"), "docs/v2.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["[[2. 4.]", " [6. 8.]]"]
    v1 = docs[docs.index("## KServe V1") :]
    command = re.search(r"```bash\n(curl .*?)\n```", v1, re.DOTALL).group(1)
    answer = json.loads(re.search(r"```json\n(.*?)\n```", v1, re.DOTALL).group(1))
    argv = shlex.split(command.replace("localhost:8888", server.url))
    assert json.loads(subprocess.run(argv, capture_output=True, check=True).stdout) == answer
