"""The CUDA paths: models on the GPU, inputs moved there, outputs brought back."""

from __future__ import annotations

import json

import falcon.testing
import pytest
import torch

from tests.conftest import body_of, nested_groups_body, tensor_json
from torch_serving import Config, Pipeline, create_app, encode

pytestmark = pytest.mark.cuda


def test_encode_cuda_tensors_like_cpu_ones():
    values = torch.randn(3, 4, dtype=torch.float64)
    assert encode(values.cuda()) == encode(values)
    assert encode({"x": [values.cuda().half()]}) == encode({"x": [values.half()]})


def test_server_on_cuda_answers_like_cpu(model_root, example_body):
    name = "model-example.pt"
    on_cpu = json.loads(Pipeline(str(model_root), 2, 0, "cpu").serve(name, name, example_body))
    on_gpu = json.loads(Pipeline(str(model_root), 2, 0, "cuda").serve(name, name, example_body))
    cpu_out, gpu_out = on_cpu["result"]["value"]["out"], on_gpu["result"]["value"]["out"]
    assert gpu_out[1:] == cpu_out[1:]
    assert gpu_out[0][1]["value"] == [60, 33, 33]
    assert gpu_out[0][0]["value"] == pytest.approx(cpu_out[0][0]["value"], rel=1e-4)


def test_app_on_cuda_device(model_root):
    client = falcon.testing.TestClient(create_app(Config(model_root=model_root, device="cuda:0")))
    body = body_of({"type": "tensor_dict", "value": {"a": tensor_json(torch.ones(2)), "b": tensor_json(torch.ones(3))}})
    result = client.simulate_post("/serve", query_string="servable_identifier=dict.pt", body=body)
    assert result.status_code == 200
    assert result.json["result"][0]["value"]["total"]["value"] == [5]
    tiny = client.simulate_post(
        "/serve", query_string="servable_identifier=tiny.pt", body=body_of(tensor_json(torch.tensor([1.0, 2.0])))
    )
    assert tiny.json["result"]["value"] == [3, 5]


def test_config_checks_the_cuda_index():
    from torch_serving import ConfigError

    Config(device="cuda:0").check_device()
    with pytest.raises(ConfigError, match="only"):
        Config(device=f"cuda:{torch.cuda.device_count()}").check_device()


def test_v2_on_cuda_in_json_and_binary(model_root):
    client = falcon.testing.TestClient(create_app(Config(model_root=model_root, device="cuda")))
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    raw = x.numpy().tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "OUTPUT__0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    binary = client.simulate_post(
        "/v2/models/tiny/infer", body=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert binary.status_code == 200, binary.text
    length = int(binary.headers["inference-header-content-length"])
    assert (
        torch.frombuffer(bytearray(binary.content[length:]), dtype=torch.float32).tolist()
        == (x * 2 + 1).flatten().tolist()
    )
    request = {"inputs": [{"name": "left", "shape": [2], "datatype": "INT16", "data": [1, 2]}]}
    result = client.simulate_post("/v2/models/dict_output/infer", body=json.dumps(request))
    assert result.json["outputs"] == [{"name": "left_doubled", "datatype": "INT16", "shape": [2], "data": [2, 4]}]


def test_nested_inputs_are_moved_to_the_models_device(model_root):
    client = falcon.testing.TestClient(create_app(Config(model_root=model_root, device="cuda")))
    result = client.simulate_post(
        "/serve", query_string="servable_identifier=nested_groups.pt", body=nested_groups_body()
    )
    assert result.status_code == 200, result.text
    assert result.json["result"]["value"] == [11]


def test_a_cuda_package_serves_on_cuda_and_is_refused_on_cpu(tmp_path):
    from tests.packages import NestedModel, nested_args
    from torch_serving import ModelLoadError, package

    batch = torch.export.Dim("batch", min=1, max=64)
    on_device = tuple(
        arg.cuda() if isinstance(arg, torch.Tensor) else {k: v.cuda() for k, v in arg.items()} for arg in nested_args(2)
    )
    package(NestedModel().cuda(), on_device, ({0: batch}, {"bias": {0: batch}, "scale": None}), tmp_path / "gpu.pt2")
    x, extra = nested_args(3)
    body = body_of(tensor_json(x), {"type": "tensor_dict", "value": {k: tensor_json(v) for k, v in extra.items()}})
    answer = json.loads(Pipeline(str(tmp_path), 2, 0, "cuda").serve("gpu.pt2", "gpu.pt2", body))["result"]["value"]
    y = torch.tensor(answer["y"]["value"]).reshape(answer["y"]["shape"])
    torch.testing.assert_close(y, NestedModel()(x, extra)["y"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelLoadError) as error:
        Pipeline(str(tmp_path), 2, 0, "cpu").metadata("gpu.pt2", "gpu")
    assert str(error.value) == "gpu was compiled for cuda, but this server runs models on cpu"
