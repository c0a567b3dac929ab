"""The README's image example through real gunicorn: the example classifier
answers the picture as it does in Python on Pillow's decode, also for
concurrent clients, whose images decode in parallel on the native threads."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from tests.integration.server import serving
from tests.models import example_script


@pytest.fixture(scope="module")
def example_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-example")
    example_script("create_image_model").main(str(root))
    return root


def test_the_example_classifier_answers_the_picture(example_root, tmp_path_factory):
    jpeg = (example_root / "picture.jpg").read_bytes()
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).copy()).permute(2, 0, 1)
    model = torch.jit.load(str(example_root / "classifier.pt"))
    with torch.inference_mode():
        expected = model(pixels.float() / 255)
    body = {"type": "image", "data_type": "float32", "value": base64.b64encode(jpeg).decode()}
    options = ["--model-root", str(example_root), "--workers", "1", "--threads", "4"]
    with serving(tmp_path_factory, "images", *options) as server:
        url = f"{server.url}/serve?servable_identifier=classifier.pt"
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.post(url, json=body, timeout=60), range(32)))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["shape"] == [10]
        assert torch.allclose(torch.tensor(result["value"]), expected, rtol=1e-5, atol=1e-7)
