"""KServe V1's answer: the model's outputs split into one prediction per instance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torch_serving.errors import RequestError
from torch_serving.v1 import _predictions


def response(*outputs: tuple[str, str, list[int], bytes]) -> tuple[bytes, int]:
    """A V2 answer with binary outputs (name, datatype, shape, data), as the native side writes it."""
    header = {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(data)}}
            for name, datatype, shape, data in outputs
        ],
    }
    text = json.dumps(header).encode()
    return text + b"".join(data for *_, data in outputs), len(text)


def test_one_output_is_a_row_per_instance_and_several_an_object_each():
    rows = np.array([[1.5, 2.0], [3.0, -4.0]], np.float32)
    assert _predictions(*response(("OUTPUT__0", "FP32", [2, 2], rows.tobytes())), 2) == [[1.5, 2.0], [3.0, -4.0]]
    words = b"".join(len(w).to_bytes(4, "little") + w for w in (b"a", "\u00fc".encode()))
    both = response(("y", "INT64", [2], np.array([7, 8], np.int64).tobytes()), ("w", "BYTES", [2], words))
    assert _predictions(*both, 2) == [{"y": 7, "w": "a"}, {"y": 8, "w": "\u00fc"}]


def test_bf16_outputs_become_numbers():
    halves = np.array([1.5, -2.25], np.float32).view(np.uint32) >> 16
    data = halves.astype(np.uint16).tobytes()
    assert _predictions(*response(("OUTPUT__0", "BF16", [2], data)), 2) == [1.5, -2.25]


def test_an_output_that_is_not_a_row_per_instance_is_500():
    with pytest.raises(RequestError) as error:
        _predictions(*response(("total", "FP32", [1], np.ones(1, np.float32).tobytes())), 3)
    assert (error.value.status, error.value.detail) == (
        500,
        "output 'total' has shape [1]; V1 answers a row per instance, so its first dimension must be the 3 instance(s)",
    )
