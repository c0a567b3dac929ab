"""AOTInductor packages (.pt2) through the native core: answers, V2, metadata and every refusal."""

from __future__ import annotations

import json
import shutil
import zipfile

import falcon.testing
import pytest
import torch

from tests.conftest import body_of, tensor_json
from tests.packages import (
    NestedModel,
    PlainModel,
    build_packages,
    install,
    nested_args,
    plain_args,
    with_metadata,
)
from torch_serving import Config, ModelLoadError, Pipeline, SignatureError, create_app


@pytest.fixture(scope="module")
def packages() -> dict:
    return build_packages()


@pytest.fixture(scope="module")
def package_root(tmp_path_factory, packages):
    root = tmp_path_factory.mktemp("packages")
    install(packages, root)
    return root


@pytest.fixture(scope="module")
def pipeline(package_root) -> Pipeline:
    return Pipeline(str(package_root), 8, 2, instances=2)


def nested_body_extra(extra: dict) -> dict:
    return {"type": "tensor_dict", "value": {k: tensor_json(v) for k, v in extra.items()}}


def nested_body(x: torch.Tensor, extra: dict) -> bytes:
    return body_of(tensor_json(x), nested_body_extra(extra))


def as_tensor(obj: dict) -> torch.Tensor:
    return torch.tensor(obj["value"]).reshape(obj["shape"])


@pytest.mark.parametrize("batch", [1, 2, 5, 64])
def test_nested_answers_equal_the_eager_model(pipeline, batch):
    x, extra = nested_args(batch)
    answer = json.loads(pipeline.serve("nested.pt2", "nested.pt2", nested_body(x, extra)))["result"]
    expected = NestedModel()(x, extra)
    assert answer["type"] == "generic_dict"
    assert sorted(answer["value"]) == ["pair", "y"]
    torch.testing.assert_close(as_tensor(answer["value"]["y"]), expected["y"], rtol=1e-5, atol=1e-5)
    first, second = answer["value"]["pair"]
    torch.testing.assert_close(as_tensor(first), expected["pair"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(as_tensor(second), expected["pair"][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [2, 7])
def test_plain_answers_equal_the_eager_model(pipeline, batch):
    a, b = plain_args(batch)
    answer = json.loads(pipeline.serve("plain.pt2", "plain.pt2", body_of(tensor_json(a), tensor_json(b))))["result"]
    summed, total = PlainModel()(a, b)
    torch.testing.assert_close(as_tensor(answer[0]), summed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(as_tensor(answer[1]), total, rtol=1e-5, atol=1e-5)


def v2_input(name: str, tensor: torch.Tensor) -> dict:
    return {"name": name, "datatype": "FP32", "shape": list(tensor.shape), "data": tensor.flatten().tolist()}


def test_v2_infer_takes_flat_inputs_by_name_and_names_dict_outputs_by_path(pipeline):
    x, extra = nested_args(3)
    request = {
        "inputs": [v2_input("x", x), v2_input("extra_bias", extra["bias"]), v2_input("INPUT__2", extra["scale"])]
    }
    response, _ = pipeline.infer("nested.pt2", "nested", json.dumps(request).encode())
    outputs = {o["name"]: torch.tensor(o["data"]).reshape(o["shape"]) for o in json.loads(response)["outputs"]}
    expected = NestedModel()(x, extra)
    assert list(outputs) == ["y", "pair.0", "pair.1"]
    torch.testing.assert_close(outputs["y"], expected["y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["pair.1"], expected["pair"][1], rtol=1e-5, atol=1e-5)


def test_v2_metadata_of_a_described_package(pipeline):
    metadata = json.loads(pipeline.metadata("nested.pt2", "nested"))
    assert metadata == {
        "name": "nested",
        "versions": ["1"],
        "platform": "torch_aoti",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "extra_bias", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "extra_scale", "datatype": "FP32", "shape": [5]},
        ],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "pair.0", "datatype": "FP32", "shape": [-1]},
            {"name": "pair.1", "datatype": "FP32", "shape": [5]},
        ],
    }


def test_v2_metadata_and_config_of_a_plain_package(pipeline):
    metadata = json.loads(pipeline.metadata("plain.pt2", "plain"))
    assert metadata["inputs"] == [
        {"name": "INPUT__0", "datatype": "FP32", "shape": [-1]},
        {"name": "INPUT__1", "datatype": "FP32", "shape": [-1]},
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["OUTPUT__0", "OUTPUT__1"]
    config = json.loads(pipeline.config("plain.pt2", "plain"))
    assert config["platform"] == "torch_aoti"
    assert config["max_batch_size"] == 0
    assert config["input"][0] == {"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [-1]}


def symbol_of_batch(package_root) -> str:
    """The symbol export gave the nested package's batch dimension."""
    description = json.loads(
        torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(str(package_root / "nested.pt2"), "model")[
            "torch_serving"
        ]
    )
    return description["inputs"][0]["dims"][0]["symbol"]


def test_inputs_breaking_the_export_are_refused_before_running(pipeline, package_root):
    s = symbol_of_batch(package_root)
    x, extra = nested_args(2)
    cases = [
        (
            body_of(tensor_json(x, "float64"), nested_body_extra(extra)),
            f"input 'x' expects float32 of shape [{s}, 4], received float64 of shape [2, 4]",
        ),
        (
            nested_body(x[:, :3], extra),
            f"input 'x' expects float32 of shape [{s}, 4], received float32 of shape [2, 3]",
        ),
        (
            nested_body(torch.zeros(65, 4), {**extra, "bias": torch.zeros(65, 3)}),
            f"input 'x' expects float32 of shape [{s}, 4] with {s} in [1, 64], received float32 of shape [65, 4]",
        ),
        (
            nested_body(x, {**extra, "bias": torch.zeros(3, 3)}),
            (
                f"input 'extra_bias' expects float32 of shape [{s}, 3], received float32 of shape [3, 3], "
                f"but input 'x' gives {s} = 2"
            ),
        ),
        (
            nested_body(x, {"bias": extra["bias"]}),
            "argument 'extra' expects a dict with keys 'bias', 'scale', received one with keys 'bias'",
        ),
        (body_of(tensor_json(x)), "the package takes 2 argument(s) (x, extra), received 1"),
        (
            body_of(tensor_json(x), tensor_json(x)),
            "argument 'extra' expects a dict with keys 'bias', 'scale', received Tensor",
        ),
    ]
    for body, message in cases:
        with pytest.raises(SignatureError) as error:
            pipeline.serve("nested.pt2", "nested.pt2", body)
        assert str(error.value) == message


def test_a_plain_package_runs_its_own_checks(pipeline):
    a, b = plain_args(2)
    with pytest.raises(SignatureError) as error:
        pipeline.serve("plain.pt2", "plain.pt2", body_of(tensor_json(a[:1]), tensor_json(b[:1])))
    assert str(error.value) == "input 'INPUT__0': dim value is too small at 0, expected it to be >= 2, but got: 1"
    with pytest.raises(SignatureError) as error:
        pipeline.serve("plain.pt2", "plain.pt2", body_of(tensor_json(a, "float64"), tensor_json(b)))
    assert str(error.value) == "input 'INPUT__0': unmatched dtype, expected float32, received float64"


def test_a_torch_export_archive_is_refused_with_how_to_package_it(pipeline):
    with pytest.raises(ModelLoadError) as error:
        pipeline.metadata("exported.pt2", "exported")
    assert str(error.value) == (
        "exported is not an AOTInductor package (a torch.export.save archive needs Python to run); "
        "package the model with torch_serving.package(model, example_args, dynamic_shapes, path) "
        "or torch._inductor.aoti_compile_and_package(torch.export.export(...))"
    )


def test_packages_for_another_target_are_refused(packages, tmp_path):
    nested = packages["nested.pt2"]
    with_metadata(nested, tmp_path / "arm.pt2", AOTI_MACHINE="aarch64")
    with_metadata(nested, tmp_path / "gpu.pt2", AOTI_DEVICE_KEY="cuda")
    pipeline = Pipeline(str(tmp_path), 4, 0)
    with pytest.raises(ModelLoadError) as error:
        pipeline.metadata("arm.pt2", "arm")
    assert str(error.value) == "arm was compiled for aarch64 CPUs, but this server runs on x86_64"
    with pytest.raises(ModelLoadError) as error:
        pipeline.metadata("gpu.pt2", "gpu")
    assert str(error.value) == "gpu was compiled for cuda, but this server runs models on cpu"


def test_a_cpu_package_on_a_cuda_server_is_refused_before_touching_the_device(packages, tmp_path):
    install({"nested.pt2": packages["nested.pt2"]}, tmp_path)
    with pytest.raises(ModelLoadError) as error:
        Pipeline(str(tmp_path), 4, 0, "cuda").metadata("nested.pt2", "nested")
    assert str(error.value) == "nested was compiled for cpu, but this server runs models on cuda"


def test_a_package_for_missing_vector_instructions_is_refused(packages, tmp_path):
    capabilities = torch._C._cpu._get_cpu_capability()
    if capabilities.get("amx_tile"):
        pytest.skip("this CPU has AMX, so an AMX package would load")
    with_metadata(packages["nested.pt2"], tmp_path / "amx.pt2", AOTI_CPU_ISA="AVX512 AVX512_VNNI AMX_TILE")
    with pytest.raises(ModelLoadError) as error:
        Pipeline(str(tmp_path), 4, 0).metadata("amx.pt2", "amx")
    assert str(error.value) == (
        "amx was compiled for CPUs with AVX512 AVX512_VNNI AMX_TILE, but this CPU lacks amx_tile; "
        "compile it on (or for) a CPU like this server's"
    )


def test_a_package_cut_short_is_refused_and_not_cached(packages, tmp_path):
    data = packages["plain.pt2"].read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    pipeline = Pipeline(str(tmp_path), 4, 0)
    with pytest.raises(ModelLoadError) as error:
        pipeline.metadata("cut.pt2", "cut")
    assert str(error.value) == (
        "cut is not a readable .pt2 archive (Failed to initialize zip archive: failed finding central directory); "
        "is it cut short?"
    )
    assert pipeline.stats()["failed_loads"] == 1 and pipeline.cached_paths() == []


def test_a_package_this_torch_cannot_load_is_refused_without_server_paths(packages, tmp_path):
    with zipfile.ZipFile(packages["plain.pt2"]) as old, zipfile.ZipFile(tmp_path / "nolib.pt2", "w") as new:
        for item in old.infolist():
            if not item.filename.endswith(".so"):
                new.writestr(item, old.read(item))
    with pytest.raises(ModelLoadError) as error:
        Pipeline(str(tmp_path), 4, 0).metadata("nolib.pt2", "nolib")
    message = str(error.value)
    assert message.startswith(f"nolib cannot be loaded by torch {torch.__version__.split('+')[0]}: File not found: ")
    assert "/" not in message


def test_a_package_from_another_torch_that_does_not_load_says_which(packages, tmp_path):
    description = json.loads(
        torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(str(packages["nested.pt2"]), "model")[
            "torch_serving"
        ]
    )
    with_metadata(
        packages["nested.pt2"], tmp_path / "old.pt2", torch_serving=json.dumps({**description, "torch": "2.9.0"})
    )
    with zipfile.ZipFile(tmp_path / "old.pt2") as old, zipfile.ZipFile(tmp_path / "older.pt2", "w") as new:
        for item in old.infolist():
            if not item.filename.endswith(".so"):
                new.writestr(item, old.read(item))
    with pytest.raises(ModelLoadError) as error:
        Pipeline(str(tmp_path), 4, 0).metadata("older.pt2", "older")
    release = torch.__version__.split("+")[0]
    assert str(error.value).startswith(f"older cannot be loaded by torch {release} (it was made by torch 2.9.0): ")


def test_package_metadata_records_what_export_declared(packages):
    description = json.loads(
        torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(str(packages["nested.pt2"]), "model")[
            "torch_serving"
        ]
    )
    assert description["arguments"] == ["x", "extra"]
    assert description["torch"] == torch.__version__.split("+")[0]
    x, bias, scale = description["inputs"]
    assert (x["name"], x["dtype"], x["dims"][1]) == ("x", "float32", 4)
    assert {k: v for k, v in x["dims"][0].items() if k != "symbol"} == {"min": 1, "max": 64}
    assert bias["dims"][0]["symbol"] == x["dims"][0]["symbol"]
    assert scale == {"name": "extra_scale", "dtype": "float32", "dims": [5]}


def test_package_refuses_example_args_that_are_not_tensors(tmp_path):
    from torch_serving.export import package

    with pytest.raises(TypeError, match="example_args may hold only tensors"):
        package(PlainModel(), (torch.ones(2, 3), 2.0), None, tmp_path / "never.pt2")
    assert not (tmp_path / "never.pt2").exists()


def test_v2_names_find_the_name_then_pt_then_pt2(packages, model_root, tmp_path):
    shutil.copyfile(model_root / "tiny.pt", tmp_path / "both.pt")
    shutil.copyfile(packages["plain.pt2"], tmp_path / "both.pt2")
    shutil.copyfile(packages["plain.pt2"], tmp_path / "only.pt2")
    client = falcon.testing.TestClient(create_app(Config(model_root=tmp_path)))
    platforms = {
        name: client.simulate_get(f"/v2/models/{name}").json["platform"] for name in ("both", "both.pt2", "only")
    }
    assert platforms == {"both": "pytorch_torchscript", "both.pt2": "torch_aoti", "only": "torch_aoti"}
