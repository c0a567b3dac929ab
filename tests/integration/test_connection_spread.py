"""New connections spread evenly over the workers, through real gunicorn: a keep-alive connection stays
on the worker that accepted it, so a worker that took most of a burst would serve them on one core
while its sibling idles (torch_serving.connection_table)."""

from __future__ import annotations

import collections
import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.server import serving
from tests.integration.test_preload import cache_of_every_worker

WORKERS = 2
CONNECTIONS = 8
TRIALS = 5


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    with serving(tmp_path_factory, "spread", "--model-root", str(model_root), "--workers", str(WORKERS)) as running:
        yield running


def open_connection(port: int) -> tuple[http.client.HTTPConnection, int]:
    """A kept-alive connection, and the pid of the worker that holds it (``GET /cache`` answers it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/cache")
    response = connection.getresponse()
    assert response.status == 200
    return connection, json.loads(response.read())["pid"]


def assert_spread_evenly(connections: list[tuple[http.client.HTTPConnection, int]]) -> None:
    """Assert that each worker holds about as many of ``connections`` as the other; close them. A worker
    takes a connection its sibling leaves to it within a millisecond, which a loaded host may deny it."""
    counts = sorted(collections.Counter(pid for _, pid in connections).values(), reverse=True)
    for connection, _ in connections:
        connection.close()
    assert len(counts) == WORKERS and counts[0] - counts[-1] <= 2, counts


def test_connections_opened_one_after_another_spread_over_the_workers(server):
    cache_of_every_worker(server)  # the health check tells only that one worker is up
    for _ in range(TRIALS):
        assert_spread_evenly([open_connection(server.port) for _ in range(CONNECTIONS)])


def test_a_burst_of_connections_spreads_over_the_workers(server):
    cache_of_every_worker(server)  # the health check tells only that one worker is up
    for _ in range(TRIALS):
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            opened = list(pool.map(lambda _: open_connection(server.port), range(CONNECTIONS)))
        assert_spread_evenly(opened)
