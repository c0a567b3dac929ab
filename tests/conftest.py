"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.models import REPO, build_model_root


# The marker of each test folder's tests.
_MARKERS = {"unit": "unit", "integration": "integration", "grpc": "integration"}
_GRPC_TESTS = Path(__file__).parent / "grpc"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """Leave out tests/grpc unless it is named: tritonclient.grpc, which it imports, and KServe's SDK,
    which the integration tests import, register the same protobuf package and cannot share a
    process (``make test`` runs tests/grpc in a pytest of its own)."""
    if collection_path == _GRPC_TESTS:
        named = any(Path(arg.split("::")[0]).resolve().is_relative_to(_GRPC_TESTS) for arg in config.args)
        return None if named else True
    return None


def pytest_collection_modifyitems(config, items):
    """Mark tests by folder, and skip CUDA tests where there is no GPU."""
    no_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _MARKERS:
            item.add_marker(getattr(pytest.mark, _MARKERS[folder]))
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    """A model root holding every test model (built once per session)."""
    return build_model_root(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def example_body() -> bytes:
    """The original README's request body, as committed in example/."""
    return (REPO / "example" / "post-data.json").read_bytes()


@pytest.fixture(scope="session")
def example_expected(model_root) -> dict:
    """The example model's answer to the example body, computed in Python."""
    model = torch.jit.load(str(model_root / "model-example.pt"))
    x = torch.tensor([[1.0, 2.0]])
    y = torch.tensor([[10.0, 1.0, 1.0]])
    td = {"x": torch.tensor([[0.5, -0.5]]), "y": torch.tensor([[10.0, 1.0, 1.0]])}
    with torch.inference_mode():
        out = model([x, y], y.clone(), td, 30, "Hello!")
    first, second = out["out"][0]
    return {"first": first.flatten().tolist(), "second": second.flatten().tolist()}


def tensor_json(tensor: torch.Tensor, dtype: str | None = None) -> dict:
    """Return the protocol's typed object for ``tensor`` (flat value and shape)."""
    obj = {"type": "tensor", "shape": list(tensor.shape), "value": tensor.flatten().tolist()}
    if dtype:
        obj["data_type"] = dtype
    return obj


def body_of(*args: dict) -> bytes:
    """Return a request body holding the typed objects ``args``."""
    return json.dumps(list(args)).encode()


# A forward of slow.pt long enough (~10 ms) that the request which loads it never leaves it known
# as quick: a quick model's call runs in its request thread, where it cannot be abandoned at the
# deadline (Servable::is_quick), so a test of deadlines would see a long forward run to its end.
WARM_UP_ROUNDS = 20


def rounds_body(rounds: int) -> bytes:
    """The body of ``slow.pt`` and ``looping.pt`` (``x`` = [1.0]): ``rounds`` sets how long they run."""
    return body_of(tensor_json(torch.tensor([1.0])), {"type": "scalar", "value": rounds})


def nested_groups_body() -> bytes:
    """A ``List[List[Tensor]]`` for nested_groups.pt, whose answer is 11."""
    groups = [[torch.tensor([1.0, 2.0]), torch.tensor([3.0])], [torch.zeros(2)]]
    value = [{"type": "tensor_list", "value": [tensor_json(t) for t in group]} for group in groups]
    return body_of({"type": "list", "value": value})
