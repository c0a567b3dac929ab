"""Warm start: which files --preload globs load, what fails, and readiness waiting for it."""

from __future__ import annotations

import threading

import falcon
import falcon.testing
import pytest

from torch_serving import Config, ConfigError, ModelLoadError, Pipeline
from torch_serving.cli import build_parser
from torch_serving.preload import Preload
from torch_serving.v2 import HealthProbeResource


def test_the_option_repeats_and_the_variable_takes_a_comma_separated_list(tmp_path):
    args = build_parser().parse_args(["--preload", "*.pt", "--preload", "vision/*.pt2"])
    assert Config.from_env({}, model_root=tmp_path, **{"preload": args.preload}).preload == ("*.pt", "vision/*.pt2")
    environ = {"TORCH_SERVING_PRELOAD": "*.pt, a/b.pt2,", "TORCH_SERVING_MODEL_ROOT": str(tmp_path)}
    assert Config.from_env(environ).preload == ("*.pt", "a/b.pt2")


def test_matching_models_load_and_failures_are_reported_without_stopping_the_others(model_root, caplog):
    pipeline = Pipeline(str(model_root), 16, 2)
    preload = Preload(pipeline, model_root, ["tiny.pt", "corrupt.pt", "nested/*.pt", "nothing-*.pt"])
    with caplog.at_level("INFO", logger="torch_serving"):
        preload.start()
        assert preload.wait(60)
    report = preload.report()
    assert report["done"] is True
    assert set(report["loaded"]) == {"tiny.pt", "nested/triple.pt"}
    assert list(report["failed"]) == ["corrupt.pt"]
    assert report["failed"]["corrupt.pt"].startswith("corrupt.pt is not a loadable TorchScript module")
    assert set(pipeline.cached_paths()) == {"tiny.pt", "nested/triple.pt"}
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("loaded tiny.pt in ") and m.endswith(" s") for m in messages)
    assert any(m.startswith("preload: corrupt.pt did not load: ") for m in messages)
    assert "preload: 'nothing-*.pt' matches no model file under the model root" in messages


class _BlockingServer:
    """Loads nothing until released: stands in for a slow model load."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def metadata(self, relative: str, name: str) -> bytes:
        self.release.wait(30)
        raise ModelLoadError(f"{name} stands in for a slow load")


def test_readiness_answers_503_until_the_preload_is_done(model_root):
    pipeline = _BlockingServer()
    preload = Preload(pipeline, model_root, ["tiny.pt"])
    app = falcon.App()
    app.add_route("/v2/health/ready", HealthProbeResource("ready", preload))
    client = falcon.testing.TestClient(app)
    preload.start()
    waiting = client.simulate_get("/v2/health/ready")
    assert (waiting.status_code, waiting.json) == (503, {"ready": False})
    pipeline.release.set()
    assert preload.wait(30)
    ready = client.simulate_get("/v2/health/ready")
    assert (ready.status_code, ready.json) == (200, {"ready": True})


def test_without_patterns_the_worker_is_ready_at_once(model_root):
    preload = Preload(Pipeline(str(model_root), 2, 0), model_root, [])
    preload.start()
    assert preload.done and preload.report() == {"patterns": [], "done": True, "loaded": {}, "failed": {}}


@pytest.mark.parametrize("pattern", ["../*.pt", "/etc/*", "a/../../*"])
def test_globs_outside_the_root_are_refused_at_start(tmp_path, pattern):
    with pytest.raises(ConfigError) as error:
        Config(model_root=tmp_path, preload=(pattern,))
    assert str(error.value) == f"preload patterns are globs under the model root, without '..'; got {pattern!r}"


def test_a_malformed_glob_is_reported_and_the_others_load(model_root):
    preload = Preload(Pipeline(str(model_root), 4, 0), model_root, ["a**b", "tiny.pt"])
    preload.start()
    assert preload.wait(30)
    assert list(preload.report()["loaded"]) == ["tiny.pt"]
    assert list(preload.report()["failed"]) == ["a**b"]
