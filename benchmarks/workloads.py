"""The load benchmark's workloads: a model and a request body each."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.models import (
    REPO,
    AffineModel,
    EchoModel,
    example_model_class,
    script_and_save,
)


class ImageClassifier(torch.nn.Module):
    """A small conv classifier: 1x3x224x224 in, 1x1000 scores out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, kernel_size=7, stride=4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(16, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class PictureClassifier(ImageClassifier):
    """The same classifier for one decoded image, [3, H, W] float32 in [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(0)).flatten(1))


class ChannelMeans(torch.nn.Module):
    """The mean of each channel of a uint8 image [C, H, W]: almost no forward."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.float().mean(dim=(1, 2))


def benchmark_jpeg() -> bytes:
    """A 224 x 224 JPEG (quality 90) of smooth shapes and mild noise, made by code."""
    generator = np.random.default_rng(0)
    y, x = np.mgrid[0:224, 0:224]
    rgb = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.float64)
    rgb[(x - 140) ** 2 + (y - 100) ** 2 < 60**2] = (220, 70, 50)
    rgb += generator.normal(0, 6, rgb.shape)
    out = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


@dataclass(frozen=True)
class BinaryRequest:
    """The same request in the Open Inference Protocol's binary form."""

    body: bytes
    header_length: int


@dataclass(frozen=True)
class Workload:
    """One benchmark case: which model, and the bytes a client sends it."""

    name: str
    model: str
    body: bytes
    binary: BinaryRequest | None = None


def _tensor_body(tensor: torch.Tensor) -> bytes:
    # What a Python client sends: json.dumps of tensor.tolist().
    return json.dumps([{"type": "tensor", "value": tensor.tolist()}]).encode()


def _binary_request(tensor: torch.Tensor) -> BinaryRequest:
    # What tritonclient sends for one FP32 input with outputs in binary.
    raw = tensor.numpy().tobytes()
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": list(tensor.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    header_bytes = json.dumps(header).encode()
    return BinaryRequest(header_bytes + raw, len(header_bytes))


# What `example-batched` declares: batch whatever waits, never wait for more (a 2 ms delay
# measured worse: batches of 2 rows cost as much as two single rows here).
BATCH_POLICY = '{"max_batch_size": 8, "max_batch_delay_ms": 0}'
# Payload sizes of the sweep: `x * 2 + 1` on [1, n] float32.
SWEEP_SIZES = (64, 1024, 16384, 262144)


def build(root: Path, batch_policy: str = BATCH_POLICY) -> list[Workload]:
    """Save the workloads' models under ``root`` (`example-batched` declaring ``batch_policy``) and return them."""
    torch.manual_seed(0)
    script_and_save(AffineModel(), root / "tiny.pt")
    # The same model batching: never answered in the event loop, its requests show what the path
    # through a thread and a batch costs beside a forward that costs nothing.
    script_and_save(AffineModel(), root / "tiny-batched.pt", batch_policy)
    script_and_save(ImageClassifier().eval(), root / "image.pt")
    script_and_save(EchoModel(), root / "echo.pt")
    script_and_save(PictureClassifier().eval(), root / "picture.pt")
    script_and_save(ChannelMeans(), root / "means.pt")
    jpeg = base64.b64encode(benchmark_jpeg()).decode()
    example_model_class().main(str(root / "model-example.pt"))
    example_model_class().main(str(root / "model-example-batched.pt"), batch_policy)
    image = torch.rand(1, 3, 224, 224)
    return [
        Workload("tiny", "tiny.pt", _tensor_body(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))),
        Workload(
            "example",
            "model-example.pt",
            (REPO / "example" / "post-data.json").read_bytes(),
        ),
        Workload("example-batched", "model-example-batched.pt", (REPO / "example" / "post-data.json").read_bytes()),
        Workload("tiny-batched", "tiny-batched.pt", _tensor_body(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))),
        *(Workload(f"tiny-{n}", "tiny.pt", _tensor_body(torch.rand(1, n))) for n in SWEEP_SIZES),
        Workload("image", "image.pt", _tensor_body(image), _binary_request(image)),
        Workload("echo", "echo.pt", _tensor_body(image)),
        Workload(
            "jpeg",
            "picture.pt",
            json.dumps([{"type": "image", "value": jpeg, "data_type": "float32"}]).encode(),
        ),
        Workload("jpeg-means", "means.pt", json.dumps([{"type": "image", "value": jpeg}]).encode()),
    ]
