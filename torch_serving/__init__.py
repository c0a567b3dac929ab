"""Serve TorchScript and AOTInductor models over HTTP: typed JSON in, typed JSON out.

The request path runs in the private native core ``torch_serving._C``; this
package is its typed facade plus the Falcon app and the gunicorn CLI.

Names are imported on first use, so that the CLI (and with it the gunicorn
master) never loads torch: only the workers do. The native names are the
native core's own (``torch_serving._native``), listed nowhere here: asking for
one, or for ``__all__``, loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# The one place the release is written: pyproject.toml reads it from here,
# and GET /v2 reports it, also from a source tree that was never installed.
__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch_serving._native import *
    from torch_serving.app import create_app as create_app
    from torch_serving.config import Config as Config
    from torch_serving.config import ConfigError as ConfigError
    from torch_serving.export import package as package

# The names this package adds to the native core's (torch_serving._native), and their modules.
_HOMES = {
    "create_app": "torch_serving.app",
    "Config": "torch_serving.config",
    "ConfigError": "torch_serving.config",
    "package": "torch_serving.export",
}


def _native_names() -> list[str]:
    """The native core's public names; importing them loads torch."""
    return importlib.import_module("torch_serving._native").__all__


def __getattr__(name: str):
    if name == "__all__":
        return sorted([*_HOMES, *_native_names()])
    if name not in _HOMES and (name.startswith("_") or name not in _native_names()):
        raise AttributeError(f"module 'torch_serving' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES.get(name, "torch_serving._native")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __getattr__("__all__")
