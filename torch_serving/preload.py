"""Warm start: loading the models that ``--preload`` globs match before a worker takes requests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch_serving._native import Pipeline, ServeError
from torch_serving.model_root import glob_models

__all__ = ["Preload"]

_log = logging.getLogger("torch_serving")


class Preload:
    """Loads the model files under ``root`` that ``patterns`` match, in a thread of its own.

    A file that fails to load is logged and reported, and the others still
    load. ``done`` holds once every file was tried.

    Args:
        pipeline: the native pipeline whose cache the models go into.
        root: the model root, resolved.
        patterns: globs relative to ``root`` (``*.pt2``, ``vision/**/*.pt``).
    """

    def __init__(self, pipeline: Pipeline, root: Path, patterns: Sequence[str]) -> None:
        self._pipeline = pipeline
        self._root = root
        self._patterns = tuple(patterns)
        self._finished = threading.Event()
        self._loaded: dict[str, float] = {}
        self._failed: dict[str, str] = {}
        if not self._patterns:
            self._finished.set()

    def start(self) -> None:
        """Start loading; returns at once."""
        if self._patterns:
            threading.Thread(target=self._run, name="preload", daemon=True).start()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the preload to finish; return whether it has."""
        return self._finished.wait(timeout)

    def report(self) -> dict[str, Any]:
        """What was asked, loaded (with seconds) and failed (with the error), and whether it is done."""
        return {
            "patterns": list(self._patterns),
            "done": self.done,
            "loaded": dict(self._loaded),
            "failed": dict(self._failed),
        }

    def _files(self) -> list[str]:
        found: dict[str, None] = {}
        for pattern in self._patterns:
            try:
                matched, refused = glob_models(self._root, pattern)
            except ValueError as error:  # a malformed glob
                self._failed[pattern] = str(error)
                _log.error("preload: %r is not a glob: %s", pattern, error)
                continue
            self._failed.update(refused)
            found.update(dict.fromkeys(matched))
            if not matched and not refused:
                _log.warning("preload: %r matches no model file under the model root", pattern)
        return list(found)

    def _run(self) -> None:
        try:
            for relative in self._files():
                started = time.monotonic()
                try:
                    self._pipeline.metadata(relative, relative)  # loads it into the cache
                except ServeError as error:
                    self._failed[relative] = str(error)
                    _log.error("preload: %s did not load: %s", relative, error)
                else:
                    self._loaded[relative] = round(time.monotonic() - started, 3)
            _log.info("preload done: %d model(s) loaded, %d failed", len(self._loaded), len(self._failed))
        except Exception:
            _log.exception("preload stopped by an unexpected error")
        finally:
            self._finished.set()
