"""A worker's admission: how many requests it holds, which its event loop
answers itself: those whose work is known to be short
(``Admission.event_loop_route``; tests/unit/test_plain_http.py has which are
plain and all in the socket), and a model whose request once ran long there
no more; and which it queues without a thread."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import body_of, rounds_body, tensor_json
from tests.models import AffineModel, script_and_save
from torch_serving import Admission, Executor, Pipeline

BODY = body_of(tensor_json(torch.tensor([[1.0, 2.0]])))


@pytest.fixture
def root(tmp_path, model_root) -> Path:
    """A model root of its own: tests here replace files in it."""
    script_and_save(AffineModel(), tmp_path / "tiny.pt")
    script_and_save(AffineModel(2.0, 0.0), tmp_path / "double.pt")
    shutil.copy(model_root / "slow.pt", tmp_path / "slow.pt")
    shutil.copy(model_root / "looping.pt", tmp_path / "looping.pt")
    shutil.copy(model_root / "batch_linear_eager.pt", tmp_path / "batched.pt")
    os.symlink("tiny.pt", tmp_path / "link.pt")
    return tmp_path


@pytest.fixture
def pipeline(root) -> Pipeline:
    return Pipeline(str(root), 8, 2)


@pytest.fixture
def route(pipeline):
    """What the worker's event loop asks of each request."""
    return Admission(pipeline, 4).event_loop_route


@pytest.fixture
def quick(route):
    """The model file the worker's event loop answers a request from at once, or None."""

    def answered_from(method: str, target: str, body_size: int) -> str | None:
        found = route(method, target, body_size)
        return found[0] if found is not None and found[2] == "answer" else None

    return answered_from


def serve(pipeline: Pipeline, identifier: str, body: bytes = BODY, on_event_loop: bool = False) -> bytes:
    """Serve ``body`` from the event loop (timed by an admission, as the worker's are) or a thread."""
    event_loop = Admission(pipeline, 4) if on_event_loop else None
    return pipeline.serve(identifier, identifier, body, 0.0, Executor(1), 30.0, None, event_loop)


def test_a_loaded_quick_model_with_a_small_body_is_quick(pipeline, quick):
    target = "/serve?servable_identifier=tiny.pt"
    assert quick("POST", target, len(BODY)) is None  # not loaded yet: loading could take long
    assert quick_within(pipeline, quick, "tiny.pt", BODY)
    # The model file each is for, which the application serves without looking it up again.
    assert quick("POST", "/v2/models/tiny/infer", len(BODY)) == "tiny.pt"
    assert quick("POST", "/v2/models/tiny.pt/infer", len(BODY)) == "tiny.pt"
    assert quick("POST", target, 64 * 1024) == "tiny.pt"


def test_a_worker_holds_requests_up_to_its_limit(pipeline):
    admission = Admission(pipeline, 2)
    assert admission.limit == 2
    assert admission.enter() and admission.enter()
    assert not admission.enter()
    admission.leave()
    assert admission.enter()
    assert not admission.enter()


def test_a_serve_query_is_read_as_falcon_reads_it(pipeline, quick):
    assert quick_within(pipeline, quick, "tiny.pt", BODY)
    # Other parameters are the application's to refuse; the identifier is the file either way.
    assert quick("POST", "/serve?x=1&servable_identifier=tiny.pt&&y", len(BODY)) == "tiny.pt"


def test_a_v2_name_finds_the_file_the_v2_routes_find(pipeline, quick, root):
    assert quick_within(pipeline, quick, "tiny.pt", BODY)
    (root / "tiny").mkdir()  # not a file: the name goes on to tiny.pt
    assert quick("POST", "/v2/models/tiny/infer", len(BODY)) == "tiny.pt"
    shutil.copy(root / "tiny.pt", root / "tiny.pt2")  # after tiny.pt, which the name finds first
    assert quick("POST", "/v2/models/tiny/infer", len(BODY)) == "tiny.pt"


def test_the_event_loop_serves_the_model_its_check_found_without_opening_its_file_again(pipeline, quick, root):
    assert quick_within(pipeline, quick, "tiny.pt", BODY)
    hits = pipeline.stats()["hits"]
    checked = serve(pipeline, "tiny.pt", on_event_loop=True)
    assert pipeline.stats()["hits"] == hits + 1
    # Replaced after the check: a call on the loop still gets the model checked (its file is not
    # opened again); any other call opens the file, and gets the new model.
    shutil.copy(root / "double.pt", root / "tiny.pt")
    assert serve(pipeline, "tiny.pt", on_event_loop=True) == checked
    assert serve(pipeline, "tiny.pt") != checked


@pytest.mark.parametrize(
    ("method", "target", "size"),
    [
        ("GET", "/serve?servable_identifier=tiny.pt", 0),
        ("POST", "/serve?servable_identifier=tiny.pt", 64 * 1024 + 1),
        ("POST", "/serve?servable_identifier=tiny.pt&invalidation_prob=0", 10),
        ("POST", "/serve?servable_identifier=tiny.pt&servable_identifier=tiny.pt", 10),
        ("POST", "/serve", 10),
        ("POST", "/serve?servable_identifier=./tiny.pt", 10),
        ("POST", "/serve?servable_identifier=link.pt", 10),
        ("POST", "/serve?servable_identifier=../tiny.pt", 10),
        ("POST", "/serve?servable_identifier=missing.pt", 10),
        ("POST", "/v2/models/tiny/versions/1/infer", 10),
        ("POST", "/v2/models/link/infer", 10),
        ("POST", "/v2/models/./tiny/infer", 10),
        ("POST", "/v2/models/../tiny/infer", 10),
        ("POST", "/v2/models/missing/infer", 10),
        ("POST", "/v2/models/tiny/infer", 64 * 1024 + 1),
        ("POST", "/v2/models/ti%6Ey/infer", 10),
        ("POST", "/v2/models/tiny\0/infer", 10),
        ("POST", "/serve?servable_identifier=tiny.pt%00", 10),
        ("POST", "/serve?servable_identifier=tin%79.pt", 10),  # Falcon decodes it; a thread's look-up decides
        ("POST", "/serve?servable_identifier=tiny.pt&x=a+b", 10),
        ("POST", "/serve?servable_identifier", 10),
        ("POST", "/v2/models//infer", 10),
        ("POST", "/v2/models/tiny/ready", 10),
        ("POST", "/cache", 10),
    ],
)
def test_requests_that_could_take_long_or_name_a_file_indirectly_are_not_quick(pipeline, quick, method, target, size):
    serve(pipeline, "tiny.pt")  # the app serves link.pt by the file it names, cached as tiny.pt
    assert not quick(method, target, size)


def test_a_batched_model_is_never_quick(pipeline, quick):
    body = body_of(tensor_json(torch.ones(1, 4)))
    serve(pipeline, "batched.pt", body)
    assert not quick("POST", "/serve?servable_identifier=batched.pt", len(body))


def test_a_loaded_model_that_is_not_quick_is_queued_when_its_target_names_it_alone(pipeline, route, root):
    body = body_of(tensor_json(torch.ones(1, 4)))
    assert route("POST", "/serve?servable_identifier=batched.pt", len(body)) is None  # not loaded yet
    serve(pipeline, "batched.pt", body)
    # The model file, its name in errors, and how it is queued.
    assert route("POST", "/serve?servable_identifier=batched.pt", len(body)) == ("batched.pt", "batched.pt", "serve")
    assert route("POST", "/v2/models/batched/infer", len(body)) == ("batched.pt", "batched", "infer")
    assert route("POST", "/v2/models/batched.pt/infer", len(body)) == ("batched.pt", "batched.pt", "infer")
    # A queued request runs before the application reads its target: anything else in it takes a thread.
    assert route("POST", "/serve?x=1&servable_identifier=batched.pt", len(body)) is None
    assert route("POST", "/serve?servable_identifier=batched.pt&x=1", len(body)) is None
    assert route("POST", "/v2/models/batched/infer?x=1", len(body)) is None
    # So do a large body, a versioned path, and a replaced file.
    assert route("POST", "/serve?servable_identifier=batched.pt", 64 * 1024 + 1) is None
    assert route("POST", "/v2/models/batched/versions/1/infer", len(body)) is None
    shutil.copy(root / "tiny.pt", root / "batched.pt")
    assert route("POST", "/serve?servable_identifier=batched.pt", len(body)) is None


def test_a_replaced_model_file_is_not_quick_until_it_is_loaded_again(pipeline, quick, root):
    assert quick_within(pipeline, quick, "tiny.pt", BODY)
    shutil.copy(root / "double.pt", root / "tiny.pt")
    assert not quick("POST", "/serve?servable_identifier=tiny.pt", len(BODY))
    assert quick_within(pipeline, quick, "tiny.pt", BODY)


def quick_within(pipeline: Pipeline, quick, identifier: str, body: bytes, calls: int = 400) -> bool:
    """Serve ``body`` up to ``calls`` times until the request is quick (its typical time is a moving
    average, which a busy machine's slow call moves too); return whether it became quick."""
    target = f"/serve?servable_identifier={identifier}"
    for _ in range(calls):
        if quick("POST", target, len(body)):
            return True
        serve(pipeline, identifier, body)
    return False


def test_a_request_that_ran_long_in_the_event_loop_keeps_its_model_off_it(pipeline, quick, caplog):
    caplog.set_level(logging.WARNING, logger="torch_serving")
    short, long = rounds_body(0), rounds_body(50_000)  # microseconds; a good part of a second
    assert quick_within(pipeline, quick, "looping.pt", short)
    serve(pipeline, "looping.pt", long)  # on a thread: only the average moves
    assert not quick("POST", "/serve?servable_identifier=looping.pt", len(short))
    assert quick_within(pipeline, quick, "looping.pt", short)
    assert caplog.records == []

    serve(pipeline, "looping.pt", long, on_event_loop=True)
    serve(pipeline, "looping.pt", long, on_event_loop=True)
    assert not quick_within(pipeline, quick, "looping.pt", short)
    [record] = caplog.records
    assert re.fullmatch(
        r"a request for looping\.pt took \d+ ms in a worker's event loop, over its 20 ms;"
        r" this worker answers the model's requests on threads from now on",
        record.getMessage(),
    )


def test_time_the_event_loop_waits_for_its_core_is_not_its_models(pipeline, caplog):
    # On a loaded host the loop's thread is preempted; moving the model to threads would not help.
    caplog.set_level(logging.WARNING, logger="torch_serving")
    body = rounds_body(2000)  # a few milliseconds of CPU
    serve(pipeline, "looping.pt", body)  # loaded
    core = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"], stdout=subprocess.PIPE)
    took = []

    def preempted_call() -> None:
        os.sched_setaffinity(0, {core})
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread's share of the core: ~1.5%
        started = time.monotonic()
        serve(pipeline, "looping.pt", body, on_event_loop=True)
        took.append(time.monotonic() - started)

    try:
        os.sched_setaffinity(hog.pid, {core})
        hog.stdout.readline()  # spinning
        caller = threading.Thread(target=preempted_call)
        caller.start()
        caller.join()
    finally:
        hog.kill()
        hog.wait()
    assert took[0] > 0.05  # it held the loop past the budget, mostly waiting for the core
    assert caplog.records == []


def test_a_call_on_the_event_loop_runs_at_once_when_every_slot_is_taken(pipeline):
    serve(pipeline, "tiny.pt")
    full = Executor(1)
    # The only slot is taken by a long call; the loop's call does not wait for it.
    holding = threading.Thread(target=lambda: pipeline.serve("slow.pt", "slow.pt", rounds_body(1000), 0.0, full, 60.0))
    holding.start()
    try:
        waited_until = time.monotonic() + 30
        while "slow.pt" not in pipeline.stats()["models"] and time.monotonic() < waited_until:
            time.sleep(0.01)  # loaded: its forward runs on the only slot
        answer = pipeline.serve("tiny.pt", "tiny.pt", BODY, 0.0, full, 30.0, None, Admission(pipeline, 4))
        assert b'"value":[3,5]' in answer
        assert holding.is_alive()
    finally:
        holding.join()
