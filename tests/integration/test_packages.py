"""AOTInductor packages (.pt2) served by a real gunicorn: /serve, tritonclient (JSON and
binary), metadata, concurrent clients on one package, refusals, and eviction."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient

from tests.conftest import body_of, tensor_json
from tests.integration.server import serving
from tests.integration.test_reliability import rss_bytes
from tests.models import REPO, example_script
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


def unpacked(tmpdir) -> list[str]:
    """The packages unpacked by the workers of a server whose TMPDIR is ``tmpdir``."""
    return sorted(path.name for path in tmpdir.glob("torch-serving-*/packages-*/aotinductor_*"))


def disk_bytes(folder) -> int:
    return sum(path.stat().st_blocks * 512 for path in folder.rglob("*") if path.is_file())


def test_reloads_and_evictions_map_no_new_copy(package_root, tmp_path_factory):
    examples = build_examples()
    root = tmp_path_factory.mktemp("reload-root")
    for name in ["plain.pt2", "nested.pt2"]:
        (root / name).write_bytes((package_root / name).read_bytes())
    (root / "model-example.pt2").write_bytes((examples / "model-example.pt2").read_bytes())
    tmpdir = tmp_path_factory.mktemp("unpack")
    body = (REPO / "example" / "post-data-pt2.json").read_bytes()
    options = ["--model-root", str(root), "--workers", "1", "--model-capacity", "1", "--buffer-size", "0"]
    with serving(tmp_path_factory, "reloads", *options, env={"TMPDIR": str(tmpdir)}) as server:
        [worker] = server.workers()

        def example(invalidate: bool) -> None:
            params = {"servable_identifier": "model-example.pt2", "invalidation_prob": 1 if invalidate else 0}
            assert requests.post(server.url + "/serve", params=params, data=body, timeout=60).ok

        example(False)
        serve_nested(server.url, 2)  # evicts the example (capacity 1)
        example(False)
        rss, disk = rss_bytes(worker), disk_bytes(tmpdir)
        for _ in range(6):
            example(True)  # reloaded each time
            serve_nested(server.url, 2)
            example(False)
        # The example's weights alone are 40 MB: a copy per reload would be 480 MB.
        assert rss_bytes(worker) - rss < 20 << 20
        assert disk_bytes(tmpdir) - disk < 1 << 20
        assert len(unpacked(tmpdir)) == 2
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    # Stopped, the server leaves nothing unpacked behind.
    assert unpacked(tmpdir) == [] and list(tmpdir.iterdir()) == []


def test_a_killed_workers_unpacked_packages_are_removed(package_root, tmp_path_factory):
    tmpdir = tmp_path_factory.mktemp("unpack")
    options = ["--model-root", str(package_root), "--workers", "1"]
    with serving(tmp_path_factory, "killed", *options, env={"TMPDIR": str(tmpdir)}) as server:
        serve_nested(server.url, 2)
        [worker] = server.workers()
        assert len(unpacked(tmpdir)) == 1
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while unpacked(tmpdir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert unpacked(tmpdir) == []
        serve_nested(server.url, 2)  # its replacement unpacks it again


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MiB tmpfs (mounting needs root; skipped without it)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_package_that_does_not_fit_in_tmpdir_is_503_and_the_workers_live(small_tmpfs, tmp_path_factory):
    examples = build_examples()
    options = ["--model-root", str(examples), "--workers", "2"]
    body = (REPO / "example" / "post-data-pt2.json").read_bytes()
    with serving(tmp_path_factory, "full", *options, env={"TMPDIR": str(small_tmpfs)}) as server:
        workers = set(server.workers())
        for _ in range(4):
            answer = requests.post(
                server.url + "/serve?servable_identifier=model-example.pt2", data=body, timeout=60
            ).json()
            assert answer["code"] == 503 and answer["description"] == "Server out of resources"
            assert answer["detail"].startswith(
                "model-example.pt2 cannot be unpacked: the server's temporary directory (TMPDIR) has "
            )
            assert answer["detail"].endswith(" MiB free, the package takes 40 MiB")
        assert requests.get(server.url + "/healthcheck", timeout=5).ok
        assert requests.get(server.url + "/metrics", timeout=5).ok
        assert set(server.workers()) == workers  # none died
        assert unpacked(small_tmpfs) == []


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


def test_the_example_classifier_package_is_the_example_classifier(tmp_path_factory):
    """README: classifier.pt2 is the classifier of classifier.pt, over a batch of images."""
    examples = build_examples()
    script_root = tmp_path_factory.mktemp("classifier")
    example_script("create_image_model").main(str(script_root))
    images = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = torch.stack([torch.jit.load(str(script_root / "classifier.pt"))(image) for image in images])
    with serving(tmp_path_factory, "classifier", "--model-root", str(examples), "--workers", "1") as server:
        answer = requests.post(
            server.url + "/serve?servable_identifier=classifier.pt2", data=body_of(tensor_json(images)), timeout=60
        ).json()
    torch.testing.assert_close(as_tensor(answer["result"]), expected, rtol=1e-5, atol=1e-6)


def test_a_missing_tmpdir_falls_back_as_python_does(package_root, tmp_path_factory):
    options = ["--model-root", str(package_root), "--workers", "1"]
    with serving(tmp_path_factory, "no-tmpdir", *options, env={"TMPDIR": "/nonexistent/tmp"}) as server:
        serve_nested(server.url, 2)  # unpacked where tempfile.gettempdir() falls back to
