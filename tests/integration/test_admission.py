"""A worker's capacity through real gunicorn: as many clients as it holds
requests (``--threads`` + ``--queue-size``) are never refused, however they
use their connections, because a request counts only from its first bytes
until its answer is made; and work abandoned at its deadline keeps its place
in that count until it ends, under our worker and under plain gunicorn."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time

import pytest
import requests

from tests.conftest import WARM_UP_ROUNDS, rounds_body
from tests.integration.server import assert_busy, cli_command, free_port, running, serving

THREADS, QUEUE_SIZE = 2, 2
CAPACITY = THREADS + QUEUE_SIZE
REQUESTS_PER_CLIENT = 60
TINY_BODY = b'{"type": "tensor", "value": [1.0]}'


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    options = ["--model-root", str(model_root), "--workers", "1"]
    options += ["--threads", str(THREADS), "--queue-size", str(QUEUE_SIZE)]
    with serving(tmp_path_factory, "admission", *options) as running_server:
        yield running_server


def statuses(server, keep_alive: bool) -> list[int]:
    """Run CAPACITY clients at once, each sending its requests one after another (alternately a
    forward of a few milliseconds, on a thread, and a quick one) on fresh connections or one
    kept-alive connection; return every status."""

    def client(_: int) -> list[int]:
        session = requests.Session() if keep_alive else None
        seen = []
        for k in range(REQUESTS_PER_CLIENT):
            identifier, body = ("looping.pt", rounds_body(20_000)) if k % 2 else ("tiny.pt", TINY_BODY)
            post = session.post if session else requests.post  # requests.post closes its connection
            response = post(f"{server.url}/serve", params={"servable_identifier": identifier}, data=body, timeout=30)
            seen.append(response.status_code)
        if session:
            session.close()
        return seen

    with concurrent.futures.ThreadPoolExecutor(CAPACITY) as pool:
        return [status for seen in pool.map(client, range(CAPACITY)) for status in seen]


def test_clients_on_fresh_connections_up_to_the_capacity_are_never_refused(server):
    assert statuses(server, keep_alive=False) == [200] * CAPACITY * REQUESTS_PER_CLIENT


def test_clients_on_kept_alive_connections_up_to_the_capacity_are_never_refused(server):
    assert statuses(server, keep_alive=True) == [200] * CAPACITY * REQUESTS_PER_CLIENT


# A forward of slow.pt this long runs for a second or more, past the deadline below.
LONG_ROUNDS = 3_000
DEADLINE_S = 0.5


def check_abandoned_work_holds_its_place(url: str) -> None:
    """With room for one request, a request answered 504 leaves its forward running: until it ends,
    a further request is refused with the busy 503 at once; then the worker answers again."""

    def post(identifier: str, body: bytes) -> requests.Response:
        return requests.post(f"{url}/serve", params={"servable_identifier": identifier}, data=body, timeout=30)

    assert post("slow.pt", rounds_body(WARM_UP_ROUNDS)).status_code == 200  # loaded; not a quick model
    assert post("tiny.pt", TINY_BODY).status_code == 200
    assert post("slow.pt", rounds_body(LONG_ROUNDS)).status_code == 504
    assert_busy(post("tiny.pt", TINY_BODY), 1)
    waited_until = time.monotonic() + 60
    while (answer := post("tiny.pt", TINY_BODY)).status_code == 503 and time.monotonic() < waited_until:
        time.sleep(0.1)
    assert json.loads(answer.content)["result"]["value"] == [3.0]


def test_work_abandoned_at_its_deadline_holds_its_place_in_our_worker(model_root, tmp_path):
    port = free_port()
    options = ["--model-root", str(model_root), "--workers", "1", "--threads", "1", "--queue-size", "0"]
    command = cli_command(port, *options, "--timeout", str(DEADLINE_S))
    with running(command, port, tmp_path / "log") as server:
        check_abandoned_work_holds_its_place(server.url)


def test_work_abandoned_at_its_deadline_holds_its_place_under_plain_gunicorn(model_root, tmp_path):
    """Gunicorn's own gthread worker takes every request: the application's calls enter the admission."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "--no-control-socket"]
    command += ["-b", f"127.0.0.1:{port}", "torch_serving.wsgi:app"]
    env = {
        "TORCH_SERVING_MODEL_ROOT": str(model_root),
        "TORCH_SERVING_THREADS": "1",
        "TORCH_SERVING_QUEUE_SIZE": "0",
        "TORCH_SERVING_TIMEOUT": str(DEADLINE_S),
    }
    with running(command, port, tmp_path / "log", env=env) as server:
        check_abandoned_work_holds_its_place(server.url)
