"""Load the native core, after libtorch, which the extension links against."""

import torch  # noqa: F401  (loads libc10 and libtorch for the extension)

from torch_serving._C import (
    BusyError,
    DeadlineError,
    DecodeError,
    EncodeError,
    ExecutionError,
    Executor,
    ModelAccessError,
    ModelLoadError,
    ModelNotFoundError,
    PhaseTimes,
    RequestBody,
    ResourceError,
    ServeError,
    Server,
    SignatureError,
    UnknownOutputError,
    decode,
    encode,
)

__all__ = [
    "BusyError",
    "DeadlineError",
    "DecodeError",
    "EncodeError",
    "ExecutionError",
    "Executor",
    "ModelAccessError",
    "ModelLoadError",
    "ModelNotFoundError",
    "PhaseTimes",
    "RequestBody",
    "ResourceError",
    "ServeError",
    "Server",
    "SignatureError",
    "UnknownOutputError",
    "decode",
    "encode",
]
