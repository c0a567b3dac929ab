"""Triton's model repository extension: the servable files under the root, and explicit
load and unload that every worker carries out.

Models load on demand anyway; ``load`` loads a model into every worker's
cache ahead of its requests, ``unload`` drops it from every cache (the next
request loads it again). Workers agree through a state file in a directory
the CLI shares between them (``SHARED_DIR``): for each model, the last
action taken on it, with the generation at which it was taken and the
process that took it. The worker that answers a call carries it out, then
records it (replacing the file, under a lock); every worker reads the file
twice a second and before it answers a repository call, and carries out the
actions of generations it has not seen. The file holds one entry per model however many calls are
made, and a worker that starts later carries out only each model's last
action. Without the CLI (another host) a call affects the answering worker
only.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from torch_serving._native import Pipeline, ServeError
from torch_serving.model_root import MODEL_SUFFIXES, servable_files
from torch_serving.shared import MODEL_VERSION

__all__ = ["Repository", "model_name"]

_STATE_NAME = "repository.json"
_LOCK_NAME = "repository.lock"
_SYNC_INTERVAL_S = 0.5

_log = logging.getLogger("torch_serving")


def model_name(relative: str, others: set[str]) -> str:
    """The V2 name of the model file ``relative``: without ``.pt``, and without ``.pt2``
    unless a ``.pt`` of the same name exists (``others``), which that name finds first."""
    stem, suffix = os.path.splitext(relative)
    if suffix == ".pt" or (suffix == ".pt2" and stem + ".pt" not in others):
        return stem
    return relative


class Repository:
    """This worker's side of the repository extension.

    Args:
        pipeline: the native pipeline whose cache is loaded and unloaded.
        root: the model root, resolved.
        shared_dir: the directory of the workers' state file; None for this worker alone.
    """

    def __init__(self, pipeline: Pipeline, root: Path, shared_dir: Path | None) -> None:
        self._pipeline = pipeline
        self._root = root
        self._shared_dir = shared_dir
        self._seen = 0  # the generation carried out
        self._lock = threading.Lock()

    def start(self) -> None:
        """Follow the other workers' actions from now on (and the ones before this worker started)."""
        if self._shared_dir is not None:
            threading.Thread(target=self._follow, name="repository", daemon=True).start()

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every servable file under the root, with its state in this worker."""
        self.sync()
        files = self.files()
        names = set(files)
        cached = set(self._pipeline.cached_paths())
        failed = self._pipeline.stats()["failed"]
        entries = []
        for relative in files:
            ready = relative in cached
            if ready_only and not ready:
                continue
            entry = {
                "name": model_name(relative, names),
                "version": MODEL_VERSION,
                "state": "READY" if ready else "UNAVAILABLE",
            }
            if relative in failed:
                entry["reason"] = f"its last load failed: {failed[relative]}"
            elif not ready:
                entry["reason"] = "not loaded; loads on its first request"
            entries.append(entry)
        return entries

    def load(self, relative: str) -> None:
        """Load ``relative`` here (raising its error), then have every worker load it."""
        self.sync()
        self._pipeline.metadata(relative, relative)
        self._append("load", relative)

    def unload(self, relative: str) -> None:
        """Drop ``relative`` from every worker's cache."""
        self.sync()
        self._pipeline.unload(relative)
        self._append("unload", relative)

    def sync(self) -> None:
        """Carry out the actions other workers recorded since the last sync."""
        if self._shared_dir is None:
            return
        with self._lock:
            # A few bytes per model: read whole, as a stat of a file replaced whole could miss a change.
            state = _read_state(self._shared_dir / _STATE_NAME)
            pending = sorted(
                (generation, action, relative)
                for relative, (generation, action, pid) in state["models"].items()
                if generation > self._seen and pid != os.getpid()
            )
            self._seen = state["generation"]
        for _, action, relative in pending:
            self._apply(action, relative)

    def _apply(self, action: str, relative: str) -> None:
        if action == "unload":
            self._pipeline.unload(relative)
            return
        started = time.monotonic()
        try:
            self._pipeline.metadata(relative, relative)
        except ServeError as error:
            _log.error("repository: %s did not load: %s", relative, error)
        else:
            _log.info("repository: loaded %s in %.3f s as another worker asked", relative, time.monotonic() - started)

    def _append(self, action: str, relative: str) -> None:
        """Record ``action`` as the last one taken on ``relative``, at the next generation."""
        if self._shared_dir is None:
            return
        path = self._shared_dir / _STATE_NAME
        with open(self._shared_dir / _LOCK_NAME, "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = _read_state(path)
            state["generation"] += 1
            state["models"][relative] = [state["generation"], action, os.getpid()]
            written = path.with_name(f"{_STATE_NAME}.{os.getpid()}")
            written.write_text(json.dumps(state))
            # Replaced whole: a reader sees the old state or the new one, never a part.
            os.replace(written, path)

    def files(self) -> list[str]:
        """The servable files under the root, relative to it, sorted (hidden ones skipped)."""
        return servable_files(self._root, MODEL_SUFFIXES)

    def name_of(self, relative: str) -> str:
        """The V2 name of the model file ``relative`` (``model_name``), looking for a ``.pt`` beside a ``.pt2``."""
        stem, suffix = os.path.splitext(relative)
        beside = stem + ".pt"
        return model_name(relative, {beside} if suffix == ".pt2" and (self._root / beside).is_file() else set())

    def cached(self) -> list[str]:
        """The model files loaded in this worker."""
        return self._pipeline.cached_paths()

    def _follow(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:
                _log.exception("repository: following the other workers failed")
            time.sleep(_SYNC_INTERVAL_S)


def _read_state(path: Path) -> dict[str, Any]:
    """The state file's contents: the last generation, and each model's [generation, action, pid]."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"generation": 0, "models": {}}
