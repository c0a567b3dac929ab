"""The marks through which a reload hands the gRPC port from old workers to new ones."""

from __future__ import annotations

import contextlib

import pytest

from torch_serving.shared import (
    SHARED_DIR,
    forget_grpc_listener,
    mark_grpc_listening,
    mark_reload,
    replaced_by_a_reload,
    successor_listens,
)

GENERATION = "TORCH_SERVING_RELOAD_GENERATION"


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """The test acts as the master; ``with worker(generation):`` as a worker forked in that generation
    (each process has its own copy of the environment)."""
    monkeypatch.setenv(SHARED_DIR, str(tmp_path))
    monkeypatch.delenv(GENERATION, raising=False)

    @contextlib.contextmanager
    def forked_in(generation: int):
        with monkeypatch.context() as process:
            process.setenv(GENERATION, str(generation))
            yield

    return forked_in


def test_an_old_worker_waits_for_a_worker_forked_after_the_reload(worker):
    for pid in (1, 2):
        with worker(0):
            mark_grpc_listening(pid)
            assert not replaced_by_a_reload()  # a plain SIGTERM: stop at once
    mark_reload()
    with worker(0):
        assert replaced_by_a_reload()
        assert not successor_listens(1)  # its sibling of the same generation is no successor
    with worker(1):
        mark_grpc_listening(3)
        assert not replaced_by_a_reload()
    with worker(0):
        assert successor_listens(1)
    forget_grpc_listener(3)  # the successor exited
    with worker(0):
        assert not successor_listens(1)


def test_a_worker_of_the_old_generation_listening_after_the_reload_is_no_successor(worker):
    # Forked before the reload and still loading when it came (before generations, its later mark
    # passed for a successor's, and both old workers stopped at once, leaving the port unserved).
    with worker(0):
        mark_grpc_listening(1)
    mark_reload()
    with worker(0):
        mark_grpc_listening(2)
        assert replaced_by_a_reload()
        assert not successor_listens(1) and not successor_listens(2)


def test_a_second_reload_waits_for_its_own_generation(worker):
    mark_reload()
    with worker(1):
        mark_grpc_listening(1)
    mark_reload()
    with worker(1):
        assert replaced_by_a_reload() and not successor_listens(1)
    with worker(2):
        mark_grpc_listening(2)
    with worker(1):
        assert successor_listens(1)


def test_without_a_shared_directory_nothing_waits(monkeypatch):
    monkeypatch.delenv(SHARED_DIR, raising=False)
    monkeypatch.delenv(GENERATION, raising=False)
    mark_grpc_listening(1)
    mark_reload()
    assert not replaced_by_a_reload() and not successor_listens(1)
