"""Hostile bodies at the 64 MiB limit are answered within a generous bound
(the request's timeout) with their exact error, and the server serves on.
`python -m benchmarks.adversarial` prints how long each one takes."""

from __future__ import annotations

import pytest
import requests

from tests.adversarial import ADVERSARIES
from tests.integration.server import serving

LIMIT = 64 * 1024 * 1024
# Far above the few seconds each takes here, far below quadratic costs (hours).
GENEROUS_BOUND_S = 60


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    options = ["--model-root", str(model_root), "--workers", "1", "--timeout", "120", "--log-level", "warning"]
    with serving(tmp_path_factory, "adversarial", *options) as running_server:
        yield running_server


@pytest.mark.parametrize("adversary", ADVERSARIES, ids=[a.name for a in ADVERSARIES])
def test_hostile_body_at_the_limit(server, adversary):
    body = adversary.build(LIMIT)
    assert len(body) == LIMIT
    response = requests.post(server.url + adversary.path, data=body, timeout=GENEROUS_BOUND_S)
    assert response.status_code == adversary.status, response.text[:500]
    if adversary.status != 200:
        doc = response.json()
        detail = doc["error"] if adversary.path.startswith("/v2") else doc["detail"]
        assert detail.startswith(adversary.detail), detail[:500]
    assert requests.get(server.url + "/healthcheck", timeout=10).status_code == 200
