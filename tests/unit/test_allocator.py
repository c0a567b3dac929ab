"""The worker's allocator settings (torch_serving.allocator), observed through glibc's own counters in
a fresh process: a block the size of a large request body comes from malloc's heap once they are
set, where glibc would otherwise map it from the kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

from torch_serving.allocator import MMAP_THRESHOLD

# Prints how many blocks malloc holds mapped for themselves more than before a block of BLOCK bytes
# was allocated (and touched), after calling reuse_large_blocks when told "set".
SCRIPT = """
import ctypes, sys
from torch_serving.allocator import reuse_large_blocks

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "set":
    assert reuse_large_blocks()
before = libc.mallinfo2().hblks
block = bytearray(int(sys.argv[2]))
print(libc.mallinfo2().hblks - before)
"""
# Larger than any block the interpreter frees while it starts (which raises glibc's threshold to that
# size), smaller than ours.
BLOCK = 8 * 1024**2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize(("setting", "mapped"), [("default", 1), ("set", 0)])
def test_a_large_request_block_comes_from_the_heap_once_set(setting, mapped):
    assert BLOCK < MMAP_THRESHOLD
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, setting, str(BLOCK)], capture_output=True, text=True, check=True
    )
    assert int(result.stdout) == mapped
