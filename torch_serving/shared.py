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
# listen, and the port would refuse connections meanwhile. So the master counts its reloads, each
# worker marks the reload generation it was forked in when it starts listening, and an old worker keeps
# listening until one of the current generation does. Generations, not times: a worker still booting
# when the reload comes may start listening after it, and is no successor.
_GENERATION = "TORCH_SERVING_RELOAD_GENERATION"  # the environment's copy is inherited at the fork
_CURRENT_GENERATION = "reload-generation"
_LISTENING = "grpc-listening-"


def _shared(name: str) -> Path | None:
    directory = os.environ.get(SHARED_DIR)
    return Path(directory, name) if directory else None


def _write(name: str, generation: int) -> None:
    path = _shared(name)
    if path is not None:
        # Whole or absent for a reader in another process.
        partial = path.with_name(f".{name}.{os.getpid()}")
        partial.write_text(str(generation))
        partial.replace(path)


def _read(path: Path | None) -> int | None:
    try:
        return int(path.read_text()) if path is not None else None
    except FileNotFoundError:
        return None


def _forked_in() -> int:
    return int(os.environ.get(_GENERATION, "0"))


def mark_reload() -> None:
    """Start a new generation of workers (the master, on SIGHUP, before it forks them)."""
    generation = _forked_in() + 1
    os.environ[_GENERATION] = str(generation)
    _write(_CURRENT_GENERATION, generation)


def mark_grpc_listening(pid: int) -> None:
    """Say that the worker ``pid``, this process, listens for gRPC from now on."""
    _write(f"{_LISTENING}{pid}", _forked_in())


def forget_grpc_listener(pid: int) -> None:
    """Remove the mark of the worker ``pid``, which exited (the master)."""
    path = _shared(f"{_LISTENING}{pid}")
    if path is not None:
        path.unlink(missing_ok=True)


def replaced_by_a_reload() -> bool:
    """Whether a reload came after this worker was forked."""
    current = _read(_shared(_CURRENT_GENERATION))
    return current is not None and current > _forked_in()


def successor_listens(pid: int) -> bool:
    """Whether a worker of the current generation other than ``pid`` listens for gRPC."""
    current, directory = _read(_shared(_CURRENT_GENERATION)), os.environ.get(SHARED_DIR)
    if current is None or directory is None:
        return False
    for path in Path(directory).glob(f"{_LISTENING}*"):
        if path.name != f"{_LISTENING}{pid}" and (_read(path) or 0) >= current:
            return True
    return False
