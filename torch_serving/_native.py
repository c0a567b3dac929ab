"""Load the native core, after libtorch, which the extension links against.

Its public names are the module's own: each error class of ``ext/errors.h``,
``Pipeline``, ``Executor`` and the rest, listed nowhere else.
"""

import torch  # noqa: F401  (loads libc10 and libtorch for the extension)

from torch_serving import _C
from torch_serving._C import *  # the names _C.pyi declares, checked against _C by stubtest

__all__ = [name for name in sorted(vars(_C)) if not name.startswith("_")]
