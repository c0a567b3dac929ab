"""Codec micro-benchmarks, grouped by direction, size and dtype.

Each group holds our codec, its floor (simdjson's own parse of the same bytes
for decode, orjson's numpy serialisation for encode) and the naive path
(orjson + numpy + torch.from_numpy for decode, orjson of tolist() for encode).
Bodies are what real clients send: json.dumps of tensor.tolist().
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import orjson
import pytest
import simdjson
import torch
from PIL import Image

from benchmarks.workloads import benchmark_jpeg
from torch_serving import decode, encode

SIZES = {"4": (1, 4), "1k": (1, 1000), "150k": (1, 3, 224, 224), "1.5M": (1, 30, 224, 224)}
DTYPES = {"float32": (torch.float32, np.float32), "int64": (torch.int64, np.int64)}


def make_tensor(shape, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return torch.rand(shape, generator=generator, dtype=dtype)
    return torch.randint(-(10**6), 10**6, shape, generator=generator, dtype=dtype)


CASES = [(size, dtype) for size in SIZES for dtype in DTYPES]
IDS = [f"{size}-{dtype}" for size, dtype in CASES]


@pytest.fixture(params=CASES, ids=IDS, scope="module")
def case(request):
    size, dtype_name = request.param
    torch_dtype, numpy_dtype = DTYPES[dtype_name]
    tensor = make_tensor(SIZES[size], torch_dtype)
    body = json.dumps({"type": "tensor", "data_type": dtype_name, "value": tensor.tolist()}).encode()
    return f"{size}-{dtype_name}", tensor, numpy_dtype, body


def test_decode_ours(case, measure):
    name, tensor, _, body = case
    (decoded,) = measure(f"decode-{name}", "ours", decode, body)
    assert torch.equal(decoded, tensor)


def test_decode_floor_simdjson(case, measure):
    name, _, _, body = case
    parser = simdjson.Parser()
    measure(f"decode-{name}", "floor", parser.parse, body)


def test_decode_naive(case, measure):
    name, tensor, numpy_dtype, body = case

    def naive():
        doc = orjson.loads(body)
        return torch.from_numpy(np.asarray(doc["value"], dtype=numpy_dtype))

    assert torch.equal(measure(f"decode-{name}", "naive", naive), tensor)


def test_encode_ours(case, measure):
    name, tensor, _, _ = case
    text = measure(f"encode-{name}", "ours", encode, tensor)
    assert len(json.loads(text)["value"]) == tensor.numel()


def test_encode_floor_orjson(case, measure):
    name, tensor, _, _ = case
    array = tensor.numpy()
    measure(f"encode-{name}", "floor", orjson.dumps, array, None, orjson.OPT_SERIALIZE_NUMPY)


@pytest.fixture(scope="module")
def jpeg():
    raw = benchmark_jpeg()
    return raw, json.dumps({"type": "image", "value": base64.b64encode(raw).decode()}).encode()


def test_image_decode_ours(jpeg, measure):
    raw, body = jpeg
    (pixels,) = measure("image-jpeg-224", "ours", decode, body)
    assert pixels.shape == (3, 224, 224)


def test_image_decode_floor_pillow(jpeg, measure):
    # The floor: Pillow decoding the raw bytes (no base64, no JSON) to an array.
    raw, _ = jpeg
    array = measure("image-jpeg-224", "floor", lambda: np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
    assert array.shape == (224, 224, 3)


def test_image_decode_naive(jpeg, measure):
    _, body = jpeg

    def naive():
        doc = orjson.loads(body)
        image = Image.open(io.BytesIO(base64.b64decode(doc["value"]))).convert("RGB")
        return torch.from_numpy(np.asarray(image)).permute(2, 0, 1)

    assert measure("image-jpeg-224", "naive", naive).shape == (3, 224, 224)


def test_encode_naive(case, measure):
    name, tensor, _, _ = case
    measure(f"encode-{name}", "naive", lambda: orjson.dumps({"value": tensor.flatten().tolist()}))
