"""Create the two small models docs/v2.md calls through the V2 endpoints.

``scale.pt`` multiplies a tensor by an optional factor; ``greeter.pt`` greets
a list of names. Both are deterministic.

Usage: python example/create_v2_models.py [FOLDER]  (default: the working directory)
"""

import sys
import warnings
from pathlib import Path
from typing import List

import torch


class Scale(torch.nn.Module):
    """``x * factor``."""

    def forward(self, x: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
        return x * factor


class Greeter(torch.nn.Module):
    """Greets every name."""

    def forward(self, names: List[str]) -> List[str]:
        return ["Hello, " + name + "!" for name in names]


def main(folder: str = ".") -> None:
    """Script both models and save them in ``folder``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\S+` is deprecated", category=DeprecationWarning)
        torch.jit.script(Scale()).save(str(Path(folder) / "scale.pt"))
        torch.jit.script(Greeter()).save(str(Path(folder) / "greeter.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
