"""How many connections each worker holds, for new connections to spread evenly over the workers.

Every worker accepts from the same listening socket, and whichever is awake first takes a new
connection, which then stays on it as long as it is kept alive. Left to that, a burst of connections
often lands mostly on one worker (``python -m benchmarks.spread``: 8 of 8 connections opened at once,
or 6 of 8), which then serves them on one core while its sibling idles: half the server's rate for as
long as those connections live. So each worker publishes how many connections it holds in a small table
in the server's shared directory (``torch_serving.shared.SHARED_DIR``), and a worker that holds more
than a sibling leaves a waiting connection to that sibling for a moment (``ServingWorker.accept``).

The table is a file of fixed slots, one per worker (its pid, then its count), mapped into every worker:
a worker claims a free slot under a lock as it starts taking connections, writes only its own slot, and
reads the others without a lock (a count read a moment stale only spreads one connection less evenly).
No torch is loaded here.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from torch_serving.shared import SHARED_DIR

__all__ = ["ConnectionTable", "forget_worker"]

_FILE = "connections"
_SLOTS = 64  # workers at once, those a reload replaces included
_SIZE = _SLOTS * 2 * 8  # a pid and a count per slot, 64-bit each
# The count of a worker that takes no new connection (starting, full or stopping): no sibling leaves
# connections to it.
_NOT_ACCEPTING = -1


def _path() -> Path | None:
    directory = os.environ.get(SHARED_DIR)
    return Path(directory, _FILE) if directory else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Mapped:
    """The table file mapped into this process, as 64-bit integers: ``slots[2 * i]`` is slot i's pid
    (0 when free), ``slots[2 * i + 1]`` its count. Claims and releases hold ``lock()``."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self.lock():
            if os.fstat(self._fd).st_size < _SIZE:
                os.ftruncate(self._fd, _SIZE)
        self._map = mmap.mmap(self._fd, _SIZE)
        self.slots = memoryview(self._map).cast("q")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.slots.release()
        self._map.close()
        os.close(self._fd)


class ConnectionTable:
    """This worker's slot in the table, and its view of its siblings' counts.

    Args:
        pid: this worker's process id.
        mapped: the table, mapped.
        slot: the slot this worker claimed.
    """

    def __init__(self, pid: int, mapped: _Mapped, slot: int) -> None:
        self._pid = pid
        self._mapped = mapped
        self._slots = mapped.slots
        self._count = 2 * slot + 1

    @classmethod
    def join(cls, pid: int) -> ConnectionTable | None:
        """Claim a slot for the worker ``pid``, counting no connection it accepts yet; None where there is
        no table (no shared directory: not started by the CLI) or no free slot."""
        path = _path()
        if path is None:
            return None
        mapped = _Mapped(path)
        slots = mapped.slots
        with mapped.lock():
            for slot in range(_SLOTS):
                holder = slots[2 * slot]
                # A slot whose worker died unnoticed (the master frees those it sees exit) is free too.
                if holder == 0 or holder == pid or not _alive(holder):
                    slots[2 * slot + 1] = _NOT_ACCEPTING
                    slots[2 * slot] = pid
                    return cls(pid, mapped, slot)
        mapped.close()
        return None

    def publish(self, connections: int | None) -> None:
        """Say how many connections this worker holds; None when it takes no new one."""
        self._slots[self._count] = _NOT_ACCEPTING if connections is None else connections

    def fewer_elsewhere(self, connections: int) -> bool:
        """Whether a sibling that takes new connections holds fewer than ``connections``."""
        slots, pid = self._slots, self._pid
        for index in range(0, 2 * _SLOTS, 2):
            holder = slots[index]
            if holder and holder != pid and _NOT_ACCEPTING < slots[index + 1] < connections:
                return True
        return False

    def leave(self) -> None:
        """Free this worker's slot (as it exits)."""
        with self._mapped.lock():
            if self._slots[self._count - 1] == self._pid:
                self._slots[self._count] = _NOT_ACCEPTING
                self._slots[self._count - 1] = 0
        self._mapped.close()


def forget_worker(pid: int) -> None:
    """Free the slot of the worker ``pid``, which exited (the master): one killed outright never freed it."""
    path = _path()
    if path is None or not path.exists():
        return
    mapped = _Mapped(path)
    try:
        with mapped.lock():
            for index in range(0, 2 * _SLOTS, 2):
                if mapped.slots[index] == pid:
                    mapped.slots[index + 1] = _NOT_ACCEPTING
                    mapped.slots[index] = 0
    finally:
        mapped.close()
