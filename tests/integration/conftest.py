"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest
import tritonclient.http as httpclient


@pytest.fixture(scope="module")
def triton(server):
    """The stock tritonclient, connected to the module's ``server`` fixture."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()
