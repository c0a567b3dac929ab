"""KServe's own Python SDK (InferenceRESTClient, protocol v2) against a real gunicorn, as a
new user would call it: readiness, JSON and binary inference, and the body's model_name."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import requests
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.integration.server import serving


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    with serving(tmp_path_factory, "kserve", "--model-root", str(model_root), "--workers", "1") as running_server:
        yield running_server


def call(server, method: str, *args, **kwargs):
    """Run one call of a fresh v2 InferenceRESTClient (its methods are coroutines)."""

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            return await getattr(client, method)(server.url, *args, **kwargs)
        finally:
            await client.close()

    return asyncio.run(run())


def test_readiness(server):
    assert call(server, "is_server_live")
    assert call(server, "is_server_ready")
    assert call(server, "is_model_ready", "tiny")


@pytest.mark.parametrize("binary", [False, True])
def test_infer_json_and_binary(server, binary):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    tensor = InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    response = call(server, "infer", InferRequest(model_name="tiny", infer_inputs=[tensor]), model_name="tiny")
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), x * 2 + 1)


def test_a_body_naming_another_model_or_version_is_refused(server):
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]
    other = requests.post(
        server.url + "/v2/models/tiny/infer", json={"model_name": "scale", "inputs": inputs}, timeout=30
    )
    assert other.status_code == 400
    assert other.json() == {"error": 'the body\'s model_name "scale" is not the model of the URL, "tiny"'}
    version = requests.post(
        server.url + "/v2/models/tiny/infer",
        json={"model_name": "tiny", "model_version": "2", "inputs": inputs},
        timeout=30,
    )
    assert version.status_code == 400
    assert version.json() == {"error": 'the body\'s model_version "2" is not the model\'s version, "1"'}
