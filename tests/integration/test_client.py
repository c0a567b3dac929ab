"""torch_serving.client against a real gunicorn: every typed value round-trips, V2 in binary
and JSON, metadata, and errors raise ServingError with the server's own detail."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.integration.server import serving
from torch_serving import client as client_module
from torch_serving.client import Client, ServingError


@pytest.fixture(scope="module")
def client(model_root, tmp_path_factory):
    with serving(tmp_path_factory, "client", "--model-root", str(model_root), "--workers", "1") as server:
        with Client(server.url, timeout=30) as session:
            yield session


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor([[1.5, -2.0], [math.inf, math.nan]]),
        torch.arange(6, dtype=torch.int64).reshape(2, 3) - 2**62,
        torch.tensor([True, False]),
        torch.tensor([1, 255], dtype=torch.uint8),
        torch.tensor([0.5, -1.25], dtype=torch.bfloat16),
        torch.tensor([0.1], dtype=torch.float64),
        torch.tensor([-128, 127], dtype=torch.int8),
        torch.tensor([-32768, 7], dtype=torch.int16),
        torch.tensor([-(2**31), 5], dtype=torch.int32),
        torch.tensor([65504.0, -0.5], dtype=torch.float16),
        torch.zeros(0, 3),
    ],
)
def test_tensors_of_every_dtype_round_trip(client, tensor):
    echoed = client.serve("echo.pt", tensor)
    assert echoed.dtype == tensor.dtype and echoed.shape == tensor.shape
    torch.testing.assert_close(echoed, tensor, equal_nan=True, rtol=0, atol=0)


def test_numpy_arrays_are_sent_as_tensors(client):
    array = np.array([[1, 2], [3, 4]], dtype=np.int32)
    echoed = client.serve("echo.pt", array)
    assert echoed.dtype == torch.int32 and echoed.tolist() == array.tolist()


def test_python_values_lists_none_and_strings(client):
    assert client.serve("kinds.pt", [1, 2], 0.5, True, None, "hi") == [[1, 2], 0.5, True, None, "hi"]
    assert client.serve("scalars.pt", 4, 3.0, False) == [8, 1.5, True]
    assert client.serve("string_echo.pt", ["a", "ü"]) == ["a", "ü"]


def test_scalars_decode_as_their_data_type(client):
    whole = client.serve("kinds.pt", [1, 2], 2.0, True, None, "hi")[1]
    assert isinstance(whole, float) and whole == 2.0
    assert [type(value) for value in client.serve("scalars.pt", 4, 3.0, False)] == [int, float, bool]


def test_v2_bytes_and_bf16_in_binary_and_json(client):
    import ml_dtypes

    words = np.array([["a", "ü"], ["", "spaces and \n"]], dtype=np.object_)
    halves = torch.tensor([[0.5, -1.25], [3.0e38, 1e-3]], dtype=torch.bfloat16)
    for binary in (True, False):
        echoed = client.infer("string_echo", {"x": words}, binary=binary)["OUTPUT__0"]
        assert echoed.tolist() == [word.encode() for word in words.flatten()]
        if binary:  # bytes that are not UTF-8 go only as binary
            assert client.infer("string_echo", {"x": np.array([b"\xff\x00"], dtype=np.object_)})[
                "OUTPUT__0"
            ].tolist() == [b"\xff\x00"]
        for value in (halves, halves.view(torch.int16).numpy().view(ml_dtypes.bfloat16)):
            out = client.infer("echo", {"x": value}, binary=binary)["OUTPUT__0"]
            assert out.dtype == ml_dtypes.bfloat16
            assert out.tobytes() == halves.view(torch.int16).numpy().tobytes()


def test_lists_and_dicts_of_tensors(client):
    x = torch.tensor([1.0, 2.0])
    doubled = client.serve("dict_output.pt", {"a": x, "b": x * 10})
    torch.testing.assert_close(doubled["a_doubled"], x * 2)
    torch.testing.assert_close(doubled["b_doubled"], x * 20)
    answer = client.serve(
        "model-example.pt",
        [torch.ones(1, 2), torch.ones(1, 3)],
        torch.ones(1, 3),
        {"x": torch.ones(1, 2), "y": torch.ones(1, 3)},
        30,
        "Hello!",
    )
    values, text, number = answer["out"]
    assert (text, number) == ("Hello!", 30) and values[1].tolist() == [[33.0, 33.0, 33.0]]


def test_images_pil_and_encoded_bytes(client):
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    picture = Image.fromarray(pixels, "RGB")
    from_pil = client.serve("echo.pt", picture)
    assert from_pil.dtype == torch.uint8 and from_pil.permute(1, 2, 0).numpy().tolist() == pixels.tolist()
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG")
    assert torch.equal(client.serve("echo.pt", encoded.getvalue()), from_pil)
    scaled = client.serve("echo.pt", client_module.Image(picture, data_type="float32"))
    assert scaled.dtype == torch.float32
    torch.testing.assert_close(scaled, from_pil.float() / 255)
    gray = client.serve("echo.pt", client_module.Image(encoded.getvalue(), mode="GRAY"))
    assert gray.shape == (1, 2, 3)


def test_v2_infer_binary_and_json_and_metadata(client):
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    for binary in (True, False):
        outputs = client.infer("tiny", {"x": x}, binary=binary)
        np.testing.assert_array_equal(outputs["OUTPUT__0"], x * 2 + 1)
    assert client.metadata("tiny")["inputs"][0]["name"] == "x"
    assert client.healthcheck()


def test_errors_raise_serving_error_with_the_servers_detail(client):
    with pytest.raises(ServingError) as error:
        client.serve("nope.pt", torch.ones(1))
    assert (error.value.code, error.value.description) == (404, "Model not found")
    assert error.value.detail == "no model file nope.pt under the model root"
    with pytest.raises(ServingError) as error:
        client.infer("nope", {"x": np.ones(1, dtype=np.float32)})
    assert error.value.code == 404
    assert error.value.detail == "no model file nope, nope.pt or nope.pt2 under the model root"


def test_values_the_protocol_cannot_send_are_refused_before_sending(client):
    with pytest.raises(TypeError, match="the protocol cannot send a set"):
        client.serve("echo.pt", {1, 2})
    with pytest.raises(TypeError, match="dicts must map strings to tensors"):
        client.serve("echo.pt", {"a": 1})


def test_the_readme_example_runs_as_written(tmp_path_factory, capsys):
    """The README's client example, against the models `make serve` creates, prints what it says."""
    import contextlib
    import re
    import subprocess
    import sys

    from tests.models import REPO

    root = tmp_path_factory.mktemp("readme-client-root")
    subprocess.run(
        [sys.executable, str(REPO / "example" / "create_model.py"), str(root / "model-example.pt")], check=True
    )
    subprocess.run([sys.executable, str(REPO / "example" / "create_v2_models.py"), str(root)], check=True)
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python client") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    with serving(tmp_path_factory, "readme-client", "--model-root", str(root), "--workers", "1") as server:
        capsys.readouterr()
        with contextlib.chdir(root):
            exec(compile(code.replace("http://localhost:8888", server.url), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "tensor([[20.4992,  2.1246,  1.5918]]) Hello! 30"
    assert printed[1] == "[[2. 2.]\n [2. 2.]]".splitlines()[0] and printed[2] == " [2. 2.]]"
    assert printed[3].startswith("404 Model not found no model file missing.pt")
