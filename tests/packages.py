"""Small AOTInductor packages (.pt2) for the tests, compiled once and cached.

A compile takes tens of seconds here, so packages are kept under
``.cache/pt2/`` keyed by the torch version and the contents of this file and
``torch_serving/export.py``: a rerun with the same torch, models and
packaging reuses them; any change recompiles.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from tests.models import REPO
from torch_serving.export import package

CACHE = REPO / ".cache" / "pt2"


class NestedModel(torch.nn.Module):
    """Takes a tensor and a dict of tensors; returns a dict holding a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        # A generator of its own, not the global one: tests build models in many threads.
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(3, 4, generator=generator))
            self.linear.bias.copy_(torch.randn(3, generator=generator))

    def forward(self, x: torch.Tensor, extra: dict[str, torch.Tensor]):
        return {"y": self.linear(x) + extra["bias"], "pair": (x.sum(1), extra["scale"] * 2)}


def nested_args(batch: int) -> tuple:
    """Distinct, deterministic arguments of NestedModel for ``batch`` rows."""
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 4, generator=generator)
    return x, {"bias": torch.randn(batch, 3, generator=generator), "scale": torch.randn(5, generator=generator)}


class PlainModel(torch.nn.Module):
    """Two tensors in, a tuple of two tensors out."""

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        return a * 2 + b, a.sum(1)


def plain_args(batch: int) -> tuple:
    generator = torch.Generator().manual_seed(100 + batch)
    return torch.randn(batch, 3, generator=generator), torch.randn(batch, 3, generator=generator)


def _cache_dir() -> Path:
    # What makes the packages: these models and torch_serving.package().
    sources = Path(__file__).read_bytes() + (REPO / "torch_serving" / "export.py").read_bytes()
    fingerprint = hashlib.sha256(sources).hexdigest()[:12]
    return CACHE / f"torch-{torch.__version__}-{fingerprint}"


def _compile_nested(path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=64)
    package(NestedModel(), nested_args(2), ({0: batch}, {"bias": {0: batch}, "scale": None}), path)


def _compile_plain(path: Path) -> None:
    # What a user without torch_serving writes: export and package, no metadata.
    batch = torch.export.Dim("batch", min=2, max=32)
    exported = torch.export.export(PlainModel(), plain_args(4), dynamic_shapes=({0: batch}, {0: batch}))
    torch._inductor.aoti_compile_and_package(exported, package_path=str(path))


def _save_exported(path: Path) -> None:
    torch.export.save(torch.export.export(PlainModel(), plain_args(4)), str(path))


_BUILDERS = {"nested.pt2": _compile_nested, "plain.pt2": _compile_plain, "exported.pt2": _save_exported}


def build_packages() -> dict[str, Path]:
    """Return the test packages by name, compiling those not cached yet."""
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, build in _BUILDERS.items():
        path = folder / name
        if not path.exists():
            partial = folder / f"partial-{name}"
            build(partial)
            partial.rename(path)
        built[name] = path
    return built


EXAMPLE_SCRIPTS = ("create_pt2_model.py", "create_model.py", "create_image_model.py")


def build_examples() -> Path:
    """Return the folder holding example/create_pt2_model.py's packages, made once per torch and script version."""
    scripts = b"".join((REPO / "example" / name).read_bytes() for name in EXAMPLE_SCRIPTS)
    scripts += (REPO / "torch_serving" / "export.py").read_bytes()
    folder = CACHE / f"examples-torch-{torch.__version__}-{hashlib.sha256(scripts).hexdigest()[:12]}"
    if not (folder / "classifier.pt2").exists():
        partial = folder.with_name(folder.name + "-partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run([sys.executable, str(REPO / "example" / "create_pt2_model.py"), str(partial)], check=True)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


def with_metadata(source: Path, target: Path, **changes: str) -> Path:
    """Copy the package ``source`` to ``target`` with AOTInductor metadata entries changed."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.endswith("_metadata.json"):
                data = json.dumps({**json.loads(data), **changes}).encode()
            new.writestr(item, data)
    return target


def install(packages: dict[str, Path], root: Path) -> None:
    """Copy the packages into the model root ``root``."""
    for name, path in packages.items():
        shutil.copyfile(path, root / name)
