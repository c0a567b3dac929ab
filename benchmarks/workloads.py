"""The load benchmark's workloads: a model and a request body each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

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


def build(root: Path) -> list[Workload]:
    """Save the workloads' models under ``root`` and return the workloads."""
    torch.manual_seed(0)
    script_and_save(AffineModel(), root / "tiny.pt")
    script_and_save(ImageClassifier().eval(), root / "image.pt")
    script_and_save(EchoModel(), root / "echo.pt")
    example_model_class().main(str(root / "model-example.pt"))
    image = torch.rand(1, 3, 224, 224)
    return [
        Workload("tiny", "tiny.pt", _tensor_body(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))),
        Workload(
            "example",
            "model-example.pt",
            (REPO / "example" / "post-data.json").read_bytes(),
        ),
        Workload("image", "image.pt", _tensor_body(image), _binary_request(image)),
        Workload("echo", "echo.pt", _tensor_body(image)),
    ]
