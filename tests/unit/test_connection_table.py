"""The table through which workers see how many connections their siblings hold."""

from __future__ import annotations

import os
import subprocess

import pytest

from torch_serving.connection_table import ConnectionTable, forget_worker
from torch_serving.shared import SHARED_DIR


@pytest.fixture
def sibling_pid():
    """The pid of a live process standing for a sibling worker."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def shared(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_DIR, str(tmp_path))
    return tmp_path


def test_a_worker_sees_a_sibling_that_holds_fewer_connections(shared, sibling_pid):
    own, sibling = ConnectionTable.join(os.getpid()), ConnectionTable.join(sibling_pid)
    sibling.publish(3)
    assert own.fewer_elsewhere(4)
    assert not own.fewer_elsewhere(3)
    own.publish(9)
    assert not sibling.fewer_elsewhere(9)  # a worker never compares itself with itself
    assert sibling.fewer_elsewhere(10)


def test_a_sibling_that_takes_no_connection_is_left_none(shared, sibling_pid):
    own, sibling = ConnectionTable.join(os.getpid()), ConnectionTable.join(sibling_pid)
    assert not own.fewer_elsewhere(5)  # it joined, but takes none yet
    sibling.publish(0)
    assert own.fewer_elsewhere(5)
    sibling.publish(None)  # full, or stopping
    assert not own.fewer_elsewhere(5)


def test_a_worker_that_left_or_exited_counts_no_more(shared, sibling_pid):
    own, sibling = ConnectionTable.join(os.getpid()), ConnectionTable.join(sibling_pid)
    sibling.publish(0)
    forget_worker(sibling_pid)  # the master, when the worker exited
    assert not own.fewer_elsewhere(5)
    sibling = ConnectionTable.join(sibling_pid)
    sibling.publish(0)
    assert own.fewer_elsewhere(5)
    sibling.leave()
    assert not own.fewer_elsewhere(5)


def test_the_slot_of_a_worker_that_died_unnoticed_is_taken_again(shared, sibling_pid):
    dead = subprocess.Popen(["true"])
    dead.wait()
    ConnectionTable.join(dead.pid).publish(0)  # then killed before it could leave, and not forgotten
    own = ConnectionTable.join(os.getpid())
    assert not own.fewer_elsewhere(5)  # the dead worker's slot is own's now


def test_there_is_no_table_without_the_servers_shared_directory(monkeypatch):
    monkeypatch.delenv(SHARED_DIR, raising=False)
    assert ConnectionTable.join(os.getpid()) is None
