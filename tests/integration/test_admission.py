"""A worker's capacity through real gunicorn: as many clients as it holds
requests (``--threads`` + ``--queue-size``) are never refused, however they
use their connections, because a request counts only from its first bytes
until its answer is made."""

from __future__ import annotations

import concurrent.futures

import pytest
import requests

from tests.conftest import rounds_body
from tests.integration.server import serving

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
