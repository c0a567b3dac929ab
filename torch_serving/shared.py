"""What the CLI, its workers and their modules share, without loading torch: the
environment variables that name the server's shared directories, the one
version every model file has, and the marks through which a reload hands the
gRPC port from the old workers to the new ones."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "MODEL_VERSION",
    "MULTIPROCESS_DIR",
    "SHARED_DIR",
    "forget_grpc_listener",
    "mark_grpc_listening",
    "mark_reload",
    "replaced_by_a_reload",
    "successor_listens",
]

# Read by prometheus-client when a worker imports it (its multiprocess mode).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The directory the CLI makes for its workers (torch_serving.cli._shared_directory).
SHARED_DIR = "TORCH_SERVING_SHARED_DIR"
# A model file is one model version, in V2's answers and the metrics' labels.
MODEL_VERSION = "1"

# Each worker listens for gRPC on a socket of its own (SO_REUSEPORT), unlike HTTP, whose socket the
# master holds: when SIGHUP replaces the workers, the old ones are told to stop before the new ones
# listen, and the port would refuse connections meanwhile. So the master marks the reload, each
# worker marks when it starts listening, and an old worker keeps listening until a newer one does.
_RELOAD = "reload"
_LISTENING = "grpc-listening-"


def _shared(name: str) -> Path | None:
    directory = os.environ.get(SHARED_DIR)
    return Path(directory, name) if directory else None


def _mark(name: str) -> None:
    path = _shared(name)
    if path is not None:
        path.touch()  # an existing mark is renewed too


def _marked_at(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path is not None else None
    except FileNotFoundError:
        return None


def mark_reload() -> None:
    """Say that a reload is replacing the workers (the master, on SIGHUP)."""
    _mark(_RELOAD)


def mark_grpc_listening(pid: int) -> None:
    """Say that the worker ``pid`` listens for gRPC from now on."""
    _mark(f"{_LISTENING}{pid}")


def forget_grpc_listener(pid: int) -> None:
    """Remove the mark of the worker ``pid``, which exited (the master)."""
    path = _shared(f"{_LISTENING}{pid}")
    if path is not None:
        path.unlink(missing_ok=True)


def replaced_by_a_reload(pid: int) -> bool:
    """Whether a reload was asked for after the worker ``pid`` started listening for gRPC."""
    listening, reload = _marked_at(_shared(f"{_LISTENING}{pid}")), _marked_at(_shared(_RELOAD))
    return listening is not None and reload is not None and reload >= listening


def successor_listens(pid: int) -> bool:
    """Whether a worker other than ``pid`` started listening for gRPC since the last reload."""
    reload, directory = _marked_at(_shared(_RELOAD)), os.environ.get(SHARED_DIR)
    if reload is None or directory is None:
        return False
    for path in Path(directory).glob(f"{_LISTENING}*"):
        marked = _marked_at(path)
        if path.name != f"{_LISTENING}{pid}" and marked is not None and marked > reload:
            return True
    return False
