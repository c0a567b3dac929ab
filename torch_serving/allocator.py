"""How the C library's allocator serves the large blocks a request takes, in a worker process.

glibc's malloc maps each block over a threshold (128 KiB at first, raised as such blocks are freed,
per heap) from the kernel and unmaps it when freed, and gives the top of its heaps back past twice
that threshold. A server that receives a 600 KB tensor on every request, through gRPC's buffers,
protobuf's ``bytes`` and native memory, then pays page faults on every block: a gRPC worker spent
about as long faulting in those pages as answering (docs/performance.md). Fixed thresholds make
such blocks come from the heaps and go back to them, so the next request reuses the same pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "reuse_large_blocks"]

_log = logging.getLogger("torch_serving")

# Blocks up to this size come from malloc's heaps: a request body of a few MiB (an image tensor, a
# batch) is reused instead of mapped anew; a larger one is rare enough to be mapped for itself.
MMAP_THRESHOLD = 16 * 1024**2
# Free memory at the top of a heap kept for the next requests before it goes back to the kernel:
# a few such bodies at once, per heap.
TRIM_THRESHOLD = 64 * 1024**2
# mallopt's parameter numbers (glibc's <malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_large_blocks() -> bool:
    """Set glibc's mmap and trim thresholds for this process (and the children it forks); return
    whether they were set: ``False`` where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    # mallopt answers 1 on success and 0 on error.
    done = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        _log.warning("could not set malloc's thresholds: large request blocks are mapped anew each time")
    return done
