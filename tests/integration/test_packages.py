"""AOTInductor packages (.pt2) served by a real gunicorn: /serve, tritonclient (JSON and
binary), metadata, concurrent clients on one package, refusals, and eviction."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient

from tests.conftest import body_of, tensor_json
from tests.integration.server import serving
from tests.models import REPO
from tests.packages import NestedModel, PlainModel, build_examples, build_packages, install, nested_args, plain_args


@pytest.fixture(scope="module")
def package_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("package-root")
    install(build_packages(), root)
    return root


@pytest.fixture(scope="module")
def server(package_root, tmp_path_factory):
    options = ["--model-root", str(package_root), "--workers", "2", "--threads", "4"]
    with serving(tmp_path_factory, "packages", *options) as running_server:
        yield running_server


def as_tensor(obj: dict) -> torch.Tensor:
    return torch.tensor(obj["value"]).reshape(obj["shape"])


def serve_nested(url: str, batch: int) -> None:
    """Serve NestedModel's arguments for ``batch`` rows and check the answer against the eager model."""
    x, extra = nested_args(batch)
    body = body_of(tensor_json(x), {"type": "tensor_dict", "value": {k: tensor_json(v) for k, v in extra.items()}})
    response = requests.post(url + "/serve", params={"servable_identifier": "nested.pt2"}, data=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()["result"]["value"]
    expected = NestedModel()(x, extra)
    torch.testing.assert_close(as_tensor(answer["y"]), expected["y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(as_tensor(answer["pair"][0]), expected["pair"][0], rtol=1e-5, atol=1e-5)


def test_serve_answers_equal_the_eager_model_for_dynamic_batches(server):
    for batch in (1, 2, 9, 64):
        serve_nested(server.url, batch)


def test_concurrent_clients_on_one_package(server):
    batches = [1 + i % 16 for i in range(96)]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda batch: serve_nested(server.url, batch), batches))


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infers_a_described_package(triton, binary):
    x, extra = nested_args(3)
    inputs = []
    for name, tensor in (("x", x), ("extra_bias", extra["bias"]), ("extra_scale", extra["scale"])):
        tensor_input = httpclient.InferInput(name, list(tensor.shape), "FP32")
        tensor_input.set_data_from_numpy(tensor.numpy(), binary_data=binary)
        inputs.append(tensor_input)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "pair.0", "pair.1")]
    result = triton.infer("nested", inputs, outputs=outputs)
    expected = NestedModel()(x, extra)
    np.testing.assert_allclose(result.as_numpy("y"), expected["y"].detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("pair.0"), expected["pair"][0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("pair.1"), expected["pair"][1].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infers_a_plain_package_by_position(triton, binary):
    a, b = plain_args(4)
    inputs = []
    for name, tensor in (("INPUT__0", a), ("INPUT__1", b)):
        tensor_input = httpclient.InferInput(name, list(tensor.shape), "FP32")
        tensor_input.set_data_from_numpy(tensor.numpy(), binary_data=binary)
        inputs.append(tensor_input)
    result = triton.infer("plain", inputs)
    summed, total = PlainModel()(a, b)
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), summed.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("OUTPUT__1"), total.numpy(), rtol=1e-5, atol=1e-5)


def test_tritonclient_metadata_of_both_kinds(triton):
    nested = triton.get_model_metadata("nested")
    assert nested["platform"] == "torch_aoti"
    assert [(i["name"], i["datatype"], i["shape"]) for i in nested["inputs"]] == [
        ("x", "FP32", [-1, 4]),
        ("extra_bias", "FP32", [-1, 3]),
        ("extra_scale", "FP32", [5]),
    ]
    plain = triton.get_model_metadata("plain")
    assert [i["name"] for i in plain["inputs"]] == ["INPUT__0", "INPUT__1"]
    assert triton.get_model_config("plain")["platform"] == "torch_aoti"


def test_refusals_through_http(server):
    x, _ = nested_args(2)
    wrong = requests.post(
        server.url + "/serve",
        params={"servable_identifier": "nested.pt2"},
        data=body_of(tensor_json(x)),
        timeout=30,
    )
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "the package takes 2 argument(s) (x, extra), received 1"
    exported = requests.post(server.url + "/v2/models/exported/infer", json={"inputs": []}, timeout=30)
    assert exported.status_code == 422
    assert exported.json()["error"].startswith("exported is not an AOTInductor package")


def test_eviction_removes_unpacked_files(package_root, tmp_path_factory):
    unpack = tmp_path_factory.mktemp("unpack")
    options = ["--model-root", str(package_root), "--workers", "1", "--model-capacity", "1", "--buffer-size", "0"]
    with serving(tmp_path_factory, "eviction", *options, env={"TMPDIR": str(unpack)}) as server:
        serve_nested(server.url, 2)
        first = sorted(p.name for p in unpack.glob("aotinductor_*"))
        assert len(first) == 1
        a, b = plain_args(2)
        body = body_of(tensor_json(a), tensor_json(b))
        assert requests.post(server.url + "/serve", params={"servable_identifier": "plain.pt2"}, data=body).ok
        second = sorted(p.name for p in unpack.glob("aotinductor_*"))
        assert len(second) == 1 and second != first


def test_the_readme_requests_for_the_example_packages(model_root, tmp_path_factory):
    """README: the example payload (less the int and string) to model-example.pt2, /serve and V2,
    answers what the TorchScript example answers, and classifier.pt2 takes a batch of images."""
    examples = build_examples()
    options = ["--model-root", str(examples), "--workers", "1"]
    with serving(tmp_path_factory, "examples", *options) as server:
        body = (REPO / "example" / "post-data-pt2.json").read_bytes()
        answer = requests.post(server.url + "/serve?servable_identifier=model-example.pt2", data=body, timeout=60)
        first, second = answer.json()["result"]["value"]["out"]
        v2 = requests.post(
            server.url + "/v2/models/model-example.pt2/infer",
            json={
                "inputs": [
                    {"name": "tensor_list_0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
                    {"name": "tensor_list_1", "datatype": "FP32", "shape": [1, 3], "data": [10, 1, 1]},
                    {"name": "single_tensor", "datatype": "FP32", "shape": [1, 3], "data": [10, 1, 1]},
                    {"name": "tensor_dict_x", "datatype": "FP32", "shape": [1, 2], "data": [0.5, -0.5]},
                    {"name": "tensor_dict_y", "datatype": "FP32", "shape": [1, 3], "data": [10, 1, 1]},
                ]
            },
            timeout=60,
        ).json()
        classifier = requests.get(server.url + "/v2/models/classifier.pt2", timeout=60).json()
    script = torch.jit.load(str(model_root / "model-example.pt"))
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[10.0, 1.0, 1.0]])
    with torch.inference_mode():
        expected = script([x, y], y, {"x": torch.tensor([[0.5, -0.5]]), "y": y}, 30, "Hello!")["out"][0]
    torch.testing.assert_close(torch.tensor(first["value"]), expected[0].flatten(), rtol=1e-5, atol=1e-5)
    assert second["value"] == [30, 3, 3]  # y + single_tensor + tensor_dict["y"], without the int
    assert [o["name"] for o in v2["outputs"]] == ["out.0", "out.1"]
    assert v2["outputs"][0]["data"] == first["value"]
    assert classifier["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert classifier["outputs"] == [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 10]}]
