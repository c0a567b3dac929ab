"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest
import tritonclient.http as httpclient

from tests.integration.server import cli_command, free_port, running


@pytest.fixture(scope="module")
def triton(server):
    """The stock tritonclient, connected to the module's ``server`` fixture."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()


@pytest.fixture
def start(model_root, tmp_path):
    """Return a function that starts torch-serving on a free port with one worker (unless its
    options say otherwise) over ``root``; use what it returns as a context manager."""

    def start_server(*options: str, root=model_root):
        port = free_port()
        command = cli_command(port, "--model-root", str(root), "--workers", "1", *options)
        return running(command, port, tmp_path / f"{port}.log")

    return start_server
