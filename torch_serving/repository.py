"""Triton's model repository extension: the servable files under the root, and explicit
load and unload that every worker carries out.

Models load on demand anyway; ``load`` loads a model into every worker's
cache ahead of its requests, ``unload`` drops it from every cache (the next
request loads it again). Workers agree through an append-only log of actions
in a directory the CLI shares between them (``SHARED_DIR``): the worker that
answers a call carries it out, then appends it; every worker reads what it
has not seen yet twice a second and before it answers a repository call.
The log's size is its generation: checking it is one ``stat``. Without the
CLI (another host) a call affects the answering worker only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from torch_serving._native import ServeError, Server
from torch_serving.cli import SHARED_DIR
from torch_serving.model_root import MODEL_SUFFIXES, glob_models

__all__ = ["SHARED_DIR", "Repository", "model_name"]

_LOG_NAME = "repository.log"
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
        server: the native pipeline whose cache is loaded and unloaded.
        root: the model root, resolved.
        shared_dir: the directory of the workers' action log; None for this worker alone.
    """

    def __init__(self, server: Server, root: Path, shared_dir: Path | None) -> None:
        self._server = server
        self._root = root
        self._log_path = shared_dir / _LOG_NAME if shared_dir is not None else None
        self._seen = 0  # bytes of the log applied
        self._lock = threading.Lock()

    def start(self) -> None:
        """Follow the other workers' actions from now on (and the ones before this worker started)."""
        if self._log_path is not None:
            threading.Thread(target=self._follow, name="repository", daemon=True).start()

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every servable file under the root, with its state in this worker."""
        self.sync()
        files = self.files()
        names = set(files)
        cached = set(self._server.cached_paths())
        entries = []
        for relative in files:
            ready = relative in cached
            if ready_only and not ready:
                continue
            entry = {
                "name": model_name(relative, names),
                "version": "1",
                "state": "READY" if ready else "UNAVAILABLE",
            }
            if not ready:
                entry["reason"] = "not loaded; loads on its first request"
            entries.append(entry)
        return entries

    def load(self, relative: str) -> None:
        """Load ``relative`` here (raising its error), then have every worker load it."""
        self.sync()
        self._server.metadata(relative, relative)
        self._append("load", relative)

    def unload(self, relative: str) -> None:
        """Drop ``relative`` from every worker's cache."""
        self.sync()
        self._server.unload(relative)
        self._append("unload", relative)

    def sync(self) -> None:
        """Carry out the actions other workers logged since the last sync."""
        if self._log_path is None:
            return
        with self._lock:
            try:
                size = self._log_path.stat().st_size
            except FileNotFoundError:
                return
            if size <= self._seen:
                return
            with open(self._log_path, "rb") as log:
                log.seek(self._seen)
                data = log.read(size - self._seen)
            complete = data[: data.rfind(b"\n") + 1]  # a line being appended waits for the next sync
            self._seen += len(complete)
        for line in complete.decode().splitlines():
            pid, action, relative = line.split(" ", 2)
            if int(pid) != os.getpid():
                self._apply(action, relative)

    def _apply(self, action: str, relative: str) -> None:
        if action == "unload":
            self._server.unload(relative)
            return
        started = time.monotonic()
        try:
            self._server.metadata(relative, relative)
        except ServeError as error:
            _log.error("repository: %s did not load: %s", relative, error)
        else:
            _log.info("repository: loaded %s in %.3f s as another worker asked", relative, time.monotonic() - started)

    def _append(self, action: str, relative: str) -> None:
        if self._log_path is None:
            return
        line = f"{os.getpid()} {action} {relative}\n".encode()
        with open(self._log_path, "ab") as log:
            fcntl.flock(log, fcntl.LOCK_EX)
            log.write(line)

    def files(self) -> list[str]:
        """The servable files under the root, relative to it, sorted."""
        return sorted(file for suffix in MODEL_SUFFIXES for file in glob_models(self._root, "**/*" + suffix)[0])

    def _follow(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:
                _log.exception("repository: following the other workers failed")
            time.sleep(_SYNC_INTERVAL_S)
