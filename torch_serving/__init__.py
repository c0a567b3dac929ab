"""Serve TorchScript models over HTTP: typed JSON in, typed JSON out.

The request path runs in the private native core ``torch_serving._C``; this
package is its typed facade plus the Falcon app and the gunicorn CLI.
"""

import torch  # noqa: F401  (loads libtorch before the extension that links it)

from torch_serving._C import (
    DecodeError,
    EncodeError,
    ExecutionError,
    ModelLoadError,
    ModelNotFoundError,
    ServeError,
    Server,
    SignatureError,
    decode,
    encode,
)
from torch_serving.app import create_app
from torch_serving.config import Config, ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "ExecutionError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ServeError",
    "Server",
    "SignatureError",
    "create_app",
    "decode",
    "encode",
]
