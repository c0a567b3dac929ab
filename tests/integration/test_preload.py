"""--preload through a real gunicorn with 2 workers: every worker holds the models before the
first /serve, reports what failed, logs each load with its time, and is ready."""

from __future__ import annotations

import time

import requests

from tests.integration.server import serving


def cache_of_every_worker(server, workers: int = 2, attempts: int = 200) -> dict[int, dict]:
    """GET /cache on fresh connections until each worker has answered once."""
    seen: dict[int, dict] = {}
    for _ in range(attempts):
        document = requests.get(server.url + "/cache", headers={"Connection": "close"}, timeout=30).json()
        seen[document["pid"]] = document
        if len(seen) == workers:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"only workers {sorted(seen)} answered /cache")


def test_preloaded_models_are_in_every_worker_before_the_first_request(model_root, tmp_path_factory):
    options = [
        "--model-root",
        str(model_root),
        "--workers",
        "2",
        "--preload",
        "tiny.pt",
        "--preload",
        "nested/*.pt,corrupt.pt",
    ]
    with serving(tmp_path_factory, "preload", *options) as server:
        assert requests.get(server.url + "/v2/health/ready", timeout=30).json() == {"ready": True}
        caches = cache_of_every_worker(server)
        assert set(caches) == set(server.workers())
        for document in caches.values():
            assert set(document["models"]) == {"tiny.pt", "nested/triple.pt"}
            assert document["preload"]["done"] is True
            assert set(document["preload"]["loaded"]) == {"tiny.pt", "nested/triple.pt"}
            assert list(document["preload"]["failed"]) == ["corrupt.pt"]
            assert document["stats"]["models"]["tiny.pt"]["requests"] == 0
        log = server.log()
    assert log.count("loaded tiny.pt in ") == 2
    assert log.count("preload: corrupt.pt did not load") == 2
