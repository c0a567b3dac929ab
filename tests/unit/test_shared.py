"""The marks through which a reload hands the gRPC port from old workers to new ones."""

from __future__ import annotations

import time

from torch_serving.shared import (
    SHARED_DIR,
    forget_grpc_listener,
    mark_grpc_listening,
    mark_reload,
    replaced_by_a_reload,
    successor_listens,
)


def test_an_old_worker_waits_for_a_worker_that_listens_after_the_reload(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_DIR, str(tmp_path))
    mark_grpc_listening(1)
    mark_grpc_listening(2)
    assert not replaced_by_a_reload(1)  # a plain SIGTERM: stop at once
    time.sleep(0.01)
    mark_reload()
    assert replaced_by_a_reload(1) and replaced_by_a_reload(2)
    assert not successor_listens(1)  # its sibling of the same generation is no successor
    time.sleep(0.01)
    mark_grpc_listening(3)
    assert successor_listens(1) and not replaced_by_a_reload(3)
    forget_grpc_listener(3)
    assert not successor_listens(1)


def test_without_a_shared_directory_nothing_waits(monkeypatch):
    monkeypatch.delenv(SHARED_DIR, raising=False)
    mark_grpc_listening(1)
    mark_reload()
    assert not replaced_by_a_reload(1) and not successor_listens(1)
