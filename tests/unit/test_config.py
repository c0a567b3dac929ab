"""Settings: parsing of flags and TORCH_SERVING_* variables, and validation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import torch_serving
from torch_serving import Config, ConfigError
from torch_serving.config import parse_field, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("64MiB", 64 * 2**20), ("10MB", 10**7), ("512 kib", 512 * 1024), ("3B", 3), ("1GiB", 2**30)],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12XB", "-1", "1.5MiB", "MiB"])
def test_bad_sizes(text):
    with pytest.raises(ConfigError, match=f"expected a size like 1048576, 64MiB or 10MB, got {text!r}"):
        parse_size(text)


def test_fields_parse_to_their_types():
    assert parse_field("port", "9000") == 9000
    assert parse_field("timeout", "2.5") == 2.5
    assert parse_field("device", "CUDA:1") == "cuda:1"
    assert parse_field("log_level", "DEBUG") == "debug"
    assert parse_field("host", "Example.Host") == "Example.Host"
    assert parse_field("model_root", "models") == Path("models")
    assert parse_field("max_model_size", "1KiB") == 1024


def test_field_errors_say_what_was_expected():
    with pytest.raises(ConfigError) as info:
        parse_field("model_capacity", "ten")
    assert str(info.value) == "model capacity must be an integer, got 'ten'"
    with pytest.raises(ConfigError) as info:
        parse_field("timeout", "soon")
    assert str(info.value) == "timeout must be a number of seconds, got 'soon'"


def test_environment_then_overrides(tmp_path):
    environ = {"TORCH_SERVING_PORT": "9001", "TORCH_SERVING_MODEL_ROOT": str(tmp_path), "TORCH_SERVING_THREADS": "2"}
    config = Config.from_env(environ, threads=8, workers=None)
    assert (config.port, config.model_root, config.threads, config.workers) == (9001, tmp_path.resolve(), 8, 2)


def test_a_flag_wins_over_an_invalid_variable(tmp_path):
    environ = {"TORCH_SERVING_THREADS": "many", "TORCH_SERVING_MAX_BODY_SIZE": "huge", "TORCH_SERVING_PORT": "9002"}
    config = Config.from_env(environ, model_root=tmp_path, threads=3, max_body_size=1024)
    assert (config.threads, config.max_body_size, config.port) == (3, 1024, 9002)
    with pytest.raises(ConfigError) as info:
        Config.from_env(environ, model_root=tmp_path, max_body_size=1024)
    assert str(info.value) == "TORCH_SERVING_THREADS: threads must be an integer, got 'many'"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 0}, "port must be in [1, 65535], got 0"),
        ({"grpc_port": 70000}, "gRPC port must be in [1, 65535], or 0 for none; got 70000"),
        ({"port": 9000, "grpc_port": 9000}, "gRPC port and port must differ; both are 9000"),
        ({"buffer_size": -1}, "buffer size must be at least 0, got -1"),
        ({"instances": -2}, "instances must be at least 0, got -2"),
        ({"timeout": 0.0}, "timeout must be a positive number of seconds, got 0.0"),
        ({"log_level": "loud"}, "log level must be one of debug, info, warning, error, critical, got 'loud'"),
        ({"device": "cuda:x"}, "device must be cpu, cuda or cuda:N, got 'cuda:x'"),
    ],
)
def test_validation(tmp_path, changes, message):
    with pytest.raises(ConfigError) as info:
        Config(model_root=tmp_path, **changes)
    assert str(info.value) == message


def test_a_batching_model_s_instances_default_to_the_cores_the_workers_share(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert Config(model_root=tmp_path, workers=2).model_instances(batching=True) == 4
    assert Config(model_root=tmp_path, workers=3).model_instances(batching=True) == 2
    assert Config(model_root=tmp_path, workers=16).model_instances(batching=True) == 1
    assert Config(model_root=tmp_path, workers=2, device="cuda").model_instances(batching=True) == 1


def test_other_models_instances_default_to_the_request_threads(tmp_path):
    assert Config(model_root=tmp_path, threads=4).model_instances(batching=False) == 4
    assert Config(model_root=tmp_path, threads=7, device="cuda").model_instances(batching=False) == 7


def test_instances_given_apply_to_every_model(tmp_path):
    config = Config(model_root=tmp_path, instances=3)
    assert config.model_instances(batching=True) == config.model_instances(batching=False) == 3


def test_an_invalid_variable_is_named():
    with pytest.raises(ConfigError) as error:
        Config.from_env({"TORCH_SERVING_WORKERS": "abc"})
    assert str(error.value) == "TORCH_SERVING_WORKERS: workers must be an integer, got 'abc'"


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch_serving", *arguments], capture_output=True, text=True, timeout=60
    )


def test_the_cli_says_its_version_and_the_help_its_defaults_as_they_are_written():
    assert run_cli("--version").stdout == f"torch-serving {torch_serving.__version__}\n"
    assert "(default on; env TORCH_SERVING_METRICS)" in " ".join(run_cli("--help").stdout.split())


def test_a_port_in_use_is_refused_at_once_saying_so():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        result = run_cli("--port", str(port))
    assert time.monotonic() - began < 10  # gunicorn alone retried for 5 s
    assert result.returncode == 2
    assert result.stderr == f"torch-serving: error: cannot listen on 127.0.0.1:{port}: address already in use\n"


def test_a_grpc_port_in_use_is_refused_at_once_saying_so():
    with socket.socket() as free, socket.socket() as taken:
        free.bind(("127.0.0.1", 0))
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free_port = free.getsockname()[1]
        free.close()
        result = run_cli("--port", str(free_port), "--grpc-port", str(port))
    assert result.returncode == 2
    assert result.stderr.endswith(f"cannot listen on 127.0.0.1:{port}: address already in use\n")
