"""Tiny deterministic TorchScript models that the tests build on the fly."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]


def script_and_save(module: torch.nn.Module, path: Path, batch_policy: str | None = None) -> Path:
    """Script ``module`` and save it at ``path``, with ``batch_policy`` as its torch_serving.json if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra_files = {} if batch_policy is None else {"torch_serving.json": batch_policy}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\S+` is deprecated", category=DeprecationWarning)
        torch.jit.script(module).save(str(path), _extra_files=extra_files)
    return path


class AffineModel(torch.nn.Module):
    """``x * scale + offset``: the `tiny` model, and distinct models by parameters."""

    def __init__(self, scale: float = 2.0, offset: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class EchoModel(torch.nn.Module):
    """Returns its tensor unchanged, whatever its dtype and shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class KindsModel(torch.nn.Module):
    """Takes one argument of each kind, with defaults, and returns them all."""

    def forward(
        self,
        ints: List[int],
        ratio: float,
        flag: bool,
        maybe: Optional[torch.Tensor] = None,
        label: str = "default",
    ) -> Tuple[List[int], float, bool, Optional[torch.Tensor], str]:
        return ints, ratio, flag, maybe, label


class DictModel(torch.nn.Module):
    """Sums a dict of tensors into a dict keyed by int and by str."""

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[int, str]]:
        total = torch.stack([value.sum() for value in inputs.values()]).sum().reshape(1)
        return {"total": total}, {len(inputs): "count"}


class RaisingModel(torch.nn.Module):
    """Raises for inputs whose sum is negative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() < 0):
            raise ValueError("inputs must not sum to a negative number")
        return x


class ComplexOutputModel(torch.nn.Module):
    """Returns a complex tensor, which the protocol cannot encode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.complex(x, x)


class SlowModel(torch.nn.Module):
    """Spends a while in matrix products, then returns ``x + 1``."""

    def forward(self, x: torch.Tensor, rounds: int) -> torch.Tensor:
        a = torch.ones(256, 256)
        for _ in range(rounds):
            a = torch.tanh(a @ a / 256.0)
        return x + 1 + (a.sum() * 0)


class LoopingModel(torch.nn.Module):
    """``x + 1`` after ``rounds`` trips round a cheap loop: as quick or as long as its argument says."""

    def forward(self, x: torch.Tensor, rounds: int) -> torch.Tensor:
        for _ in range(rounds):
            x = x * 1.0
        return x + 1


class WideModel(torch.nn.Module):
    """``x`` times 100,000 steps from 0 to 1: a quick forward whose answer is about a megabyte."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.linspace(0.0, 1.0, 100000)


class PairModel(torch.nn.Module):
    """Two tensors and an optional scale in, a tuple of two tensors out."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        return a + b * scale, a * b


class WordsModel(torch.nn.Module):
    """Strings in, a list of strings, a string and an int out."""

    def forward(self, words: List[str], prefix: str) -> Tuple[List[str], str, int]:
        return [prefix + word for word in words], prefix.upper(), len(words)


class StringEchoModel(torch.nn.Module):
    """Returns its list of strings unchanged."""

    def forward(self, x: List[str]) -> List[str]:
        return x


class ScalarsModel(torch.nn.Module):
    """An int, a float and a bool in, each changed, out."""

    def forward(self, count: int, ratio: float, flag: bool) -> Tuple[int, float, bool]:
        return count * 2, ratio / 2, not flag


class ListOutputModel(torch.nn.Module):
    """Returns a list of three multiples of its input."""

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [x, x * 2, x * 3]


class DictOutputModel(torch.nn.Module):
    """Doubles every tensor of a dict, keyed ``<name>_doubled``."""

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {name + "_doubled": value * 2 for name, value in inputs.items()}


class NestedListsModel(torch.nn.Module):
    """Returns a list of lists of ints, which V2 cannot express as tensors."""

    def forward(self, x: torch.Tensor) -> List[List[int]]:
        return [[1, 2], [x.numel()]]


class WordGridModel(torch.nn.Module):
    """Returns a list of lists of strings, which V2 cannot express as tensors."""

    def forward(self, x: torch.Tensor) -> List[List[str]]:
        return [["a", "b"], ["c"]]


class TupleWithListModel(torch.nn.Module):
    """Returns a list of tensors beside a tensor: V2 can express only the second."""

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        return [x, x], x * 2


class NestedGroupsModel(torch.nn.Module):
    """Adds a buffer (on the model's device) to every tensor of nested lists, and sums."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("one", torch.ones(1))

    def forward(self, groups: List[List[torch.Tensor]]) -> torch.Tensor:
        total = torch.zeros(1, device=self.one.device)
        for group in groups:
            for t in group:
                total = total + (t + self.one).sum()
        return total


class AllocatingModel(torch.nn.Module):
    """Allocates ``n`` float32 zeros: past the machine's memory, forward fails to allocate."""

    def forward(self, n: int) -> torch.Tensor:
        return torch.zeros(n)


class BatchLinearModel(torch.nn.Module):
    """A seeded linear layer: each row's output depends on that row alone."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class BatchScaleModel(torch.nn.Module):
    """``x * factor``, refusing negative inputs, so a bad row fails the whole forward."""

    def forward(self, x: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative input")
        return x * factor


class BatchStructuresModel(torch.nn.Module):
    """Tensors nested in a list and a dict, and a tuple with a dict out."""

    def forward(
        self, pair: List[torch.Tensor], named: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return pair[0] + pair[1], {"sum": named["a"] + named["b"]}


class BatchCountModel(torch.nn.Module):
    """Returns the rows it saw, an int that no batch can split."""

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int]:
        return x + 1, x.size(0)


class BatchLabelModel(torch.nn.Module):
    """Returns its string argument beside the tensor: the same for every request of a batch."""

    def forward(self, x: torch.Tensor, label: str) -> Tuple[torch.Tensor, str]:
        return x * 2, label


# What each batched test model declares in its archive, by file name.
BATCH_POLICIES = {
    "batch_linear.pt": ('{"max_batch_size": 8, "max_batch_delay_ms": 300}', BatchLinearModel),
    "batch_linear_eager.pt": ('{"max_batch_size": 8, "max_batch_delay_ms": 0}', BatchLinearModel),
    "batch_scale.pt": ('{"max_batch_size": 8, "max_batch_delay_ms": 300}', BatchScaleModel),
    "batch_structures.pt": ('{"max_batch_size": 8, "max_batch_delay_ms": 300}', BatchStructuresModel),
    "batch_label.pt": ('{"max_batch_size": 8, "max_batch_delay_ms": 300}', BatchLabelModel),
    "batch_count.pt": ('{"max_batch_size": 8, "max_batch_delay_ms": 300}', BatchCountModel),
    "batch_two_rows.pt": ('{"max_batch_size": 2, "max_batch_delay_ms": 300}', BatchLinearModel),
    "batch_malformed.pt": ('{"max_batch_size": "eight"}', BatchLinearModel),
    # Forwards long enough that requests queue behind them.
    "batch_slow.pt": ('{"max_batch_size": 8, "max_batch_delay_ms": 0, "instance_count": 1}', SlowModel),
    "slow_pair.pt": ('{"instance_count": 2}', SlowModel),
}


def example_script(name: str):
    """Import ``example/<name>.py``, one of the scripts that make the example models."""
    sys.path.insert(0, str(REPO / "example"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def example_model_class():
    """Return example/create_model.py, which makes ExampleModel, the original's model."""
    return example_script("create_model")


def build_model_root(root: Path) -> Path:
    """Fill ``root`` with the models the tests use and return it."""
    models = {
        "tiny.pt": AffineModel(),
        "echo.pt": EchoModel(),
        "kinds.pt": KindsModel(),
        "dict.pt": DictModel(),
        "raising.pt": RaisingModel(),
        "complex.pt": ComplexOutputModel(),
        "slow.pt": SlowModel(),
        "looping.pt": LoopingModel(),
        "nested/triple.pt": AffineModel(3.0, 0.0),
        "pair.pt": PairModel(),
        "words.pt": WordsModel(),
        "string_echo.pt": StringEchoModel(),
        "scalars.pt": ScalarsModel(),
        "list_output.pt": ListOutputModel(),
        "dict_output.pt": DictOutputModel(),
        "nested_lists.pt": NestedListsModel(),
        "word_grid.pt": WordGridModel(),
        "tuple_with_list.pt": TupleWithListModel(),
        "allocating.pt": AllocatingModel(),
        "nested_groups.pt": NestedGroupsModel(),
    }
    for name, module in models.items():
        script_and_save(module, root / name)
    for k in range(6):
        script_and_save(AffineModel(1.0, float(k)), root / "many" / f"plus{k}.pt")
    for name, (policy, model_class) in BATCH_POLICIES.items():
        script_and_save(model_class(), root / name, policy)
    example_model_class().main(str(root / "model-example.pt"))
    (root / "corrupt.pt").write_bytes(b"this is not a zip archive")
    torch.save({"weight": torch.ones(2)}, root / "state_dict.pt")
    (root / "folder.pt").mkdir()
    return root
