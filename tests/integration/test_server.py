"""End to end against a real gunicorn: the original README example, errors,
configuration, and many concurrent clients over more models than the cache."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch

from tests.conftest import body_of, tensor_json
from tests.integration.server import cli_command, free_port, running, serving
from tests.models import REPO


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    options = [
        "--model-root",
        str(model_root),
        "--workers",
        "2",
        "--threads",
        "4",
        "--model-capacity",
        "2",
        "--buffer-size",
        "1",
        "--max-body-size",
        "64KiB",
    ]
    with serving(tmp_path_factory, "server", *options) as running_server:
        yield running_server


def post(server, identifier: str, body: bytes, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.url}/serve", params={"servable_identifier": identifier}, data=body, timeout=30, **kwargs
    )


def tiny_body(*values: float) -> bytes:
    return body_of(tensor_json(torch.tensor(values)))


@pytest.mark.skipif(shutil.which("curl") is None, reason="the original README's command needs curl")
def test_original_readme_curl_command(server, example_expected):
    # Run from the repo root exactly as the original README wrote it, but
    # for the port, which must be a free one here.
    command = (
        "curl -s -X POST --data @example/post-data.json "
        f"localhost:{server.port}/serve?servable_identifier=model-example.pt"
    )
    output = subprocess.run(command.split(), cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    doc = json.loads(output)
    assert doc["code"] == 200 and doc["description"] == "Success"
    assert doc["result"]["type"] == "generic_dict"
    tensors, text, number = doc["result"]["value"]["out"]
    assert [(t["type"], t["data_type"], t["shape"]) for t in tensors] == [("tensor", "float32", [1, 3])] * 2
    assert tensors[1]["value"] == [60, 33, 33]
    assert tensors[0]["value"] == pytest.approx(example_expected["first"], rel=1e-6)
    assert text == {"type": "string", "value": "Hello!"}
    assert number == {"type": "scalar", "data_type": "int64", "value": 30}


def test_healthcheck_and_access_log(server):
    response = requests.get(server.url + "/healthcheck", timeout=5)
    assert response.json() == {"code": 200, "message": "OK", "description": "OK"}
    post(server, "tiny.pt", tiny_body(1))
    assert server.wait_for_log('"POST /serve?servable_identifier=tiny.pt HTTP/1.1" 200')


@pytest.mark.parametrize(
    ("identifier", "body", "status", "description"),
    [
        ("tiny.pt", b"[1,", 400, "Invalid request body"),
        ("../tiny.pt", b"[]", 400, "Invalid servable identifier"),
        ("missing.pt", b"[]", 404, "Model not found"),
        ("corrupt.pt", tiny_body(1), 422, "Model not loadable"),
        ("complex.pt", tiny_body(1), 500, "Unsupported model output"),
        ("raising.pt", tiny_body(-1), 400, "Model failed on the inputs"),
    ],
)
def test_errors_over_http_then_the_server_still_answers(server, identifier, body, status, description):
    response = post(server, identifier, body)
    assert response.status_code == status
    doc = response.json()
    assert doc["code"] == status and doc["description"] == description and doc["detail"]
    assert post(server, "tiny.pt", tiny_body(1, 2)).json()["result"]["value"] == [3, 5]


def test_body_limits_with_content_length_and_chunked(server):
    big = b" " * (64 * 1024 + 1)
    response = post(server, "tiny.pt", big)
    assert response.status_code == 413
    assert response.json()["detail"] == "body of 65537 bytes exceeds the limit of 65536 bytes"
    chunked = post(server, "tiny.pt", iter([big[:40000], big[40000:]]))
    assert chunked.status_code == 413
    assert chunked.json()["detail"] == "chunks announce 65537 bytes, over the limit of 65536 bytes"
    small = tiny_body(4)
    assert post(server, "tiny.pt", iter([small[:5], small[5:]])).json()["result"]["value"] == [9]


def test_many_clients_over_more_models_than_the_cache(server):
    identifiers = [f"many/plus{k}.pt" for k in range(6)] + ["tiny.pt", "nested/triple.pt"]
    expected = {f"many/plus{k}.pt": (lambda x, k=k: x + k) for k in range(6)}
    expected["tiny.pt"] = lambda x: 2 * x + 1
    expected["nested/triple.pt"] = lambda x: 3 * x

    def client(seed: int) -> int:
        rng = random.Random(seed)
        checked = 0
        with requests.Session() as session:
            for _ in range(40):
                identifier = rng.choice(identifiers)
                x = float(rng.randint(-100, 100))
                response = session.post(
                    f"{server.url}/serve", params={"servable_identifier": identifier}, data=tiny_body(x), timeout=60
                )
                assert response.status_code == 200, response.text
                assert response.json()["result"]["value"] == [expected[identifier](x)]
                checked += 1
        return checked

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(client, range(8))) == 320
    cache = requests.get(server.url + "/cache", timeout=5).json()
    assert len(cache["models"]) <= 3


def test_environment_variables_configure_the_cli(model_root, tmp_path):
    port = free_port()
    env = {
        "TORCH_SERVING_PORT": str(port),
        "TORCH_SERVING_MODEL_ROOT": str(model_root),
        "TORCH_SERVING_MAX_BODY_SIZE": "1KiB",
        "TORCH_SERVING_WORKERS": "1",
        "TORCH_SERVING_MODEL_CAPACITY": "1",
        "TORCH_SERVING_BUFFER_SIZE": "0",
        "TORCH_SERVING_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "torch_serving"]
    with running(command, port, tmp_path / "log", env=env) as server:
        assert post(server, "tiny.pt", b" " * 2000).status_code == 413
        assert post(server, "tiny.pt", tiny_body(1)).status_code == 200
        assert post(server, "echo.pt", tiny_body(1)).status_code == 200
        assert requests.get(server.url + "/cache", timeout=5).json()["models"] == ["echo.pt"]
        # Access lines are INFO records, which a warning level leaves out.
        assert not server.wait_for_log("POST /serve", timeout_s=1.0)


@pytest.mark.parametrize("worker_class", ["gthread", "torch_serving.worker.ServingWorker"])
def test_wsgi_entry_point_under_plain_gunicorn(model_root, tmp_path, worker_class):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        worker_class,
        "--threads",
        "2",
        "--no-control-socket",
        "-b",
        f"127.0.0.1:{port}",
        "torch_serving.wsgi:app",
    ]
    with running(command, port, tmp_path / "log", env={"TORCH_SERVING_MODEL_ROOT": str(model_root)}) as server:
        assert post(server, "nested/triple.pt", tiny_body(2)).json()["result"]["value"] == [6]


@pytest.mark.parametrize("host", ["::1", "127.0.0.1"])
def test_the_cli_listens_on_ipv6_and_ipv4_hosts(model_root, tmp_path, host):
    port = free_port(host)
    command = cli_command(port, "--host", host, "--model-root", str(model_root), "--workers", "1")
    with running(command, port, tmp_path / "log", host=host) as server:
        assert post(server, "tiny.pt", tiny_body(1)).json()["result"]["value"] == [3]


def test_the_wildcard_ipv6_host_takes_ipv4_and_ipv6_clients(model_root, tmp_path):
    """`--host ::`, as the deploy/ manifests set it for dual-stack pods (only loopback is called here)."""
    port = free_port("::")
    command = cli_command(port, "--host", "::", "--model-root", str(model_root), "--workers", "1")
    with running(command, port, tmp_path / "log", host="::1") as server:
        assert post(server, "tiny.pt", tiny_body(1)).json()["result"]["value"] == [3]
        ipv4 = requests.post(
            f"http://127.0.0.1:{port}/serve", params={"servable_identifier": "tiny.pt"}, data=tiny_body(1), timeout=30
        )
        assert ipv4.json()["result"]["value"] == [3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-body-size", "12XB"], "expected a size like 1048576, 64MiB or 10MB, got '12XB'"),
        (["--model-capacity", "0"], "model capacity must be at least 1, got 0"),
        (["--model-root", "/nonexistent"], "model root /nonexistent is not a directory"),
        (["--device", "tpu"], "device must be cpu, cuda or cuda:N, got 'tpu'"),
    ],
)
def test_cli_refuses_bad_settings(options, message):
    result = subprocess.run(cli_command(free_port(), *options), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_cli_refuses_cuda_where_there_is_none():
    result = subprocess.run(cli_command(free_port(), "--device", "cuda"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "device cuda was asked for, but CUDA is not available here" in result.stderr


def test_cli_help_lists_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "torch_serving", "--help"], capture_output=True, text=True, timeout=60
    )
    for option in [
        "--host",
        "--port",
        "--model-root",
        "--model-capacity",
        "--buffer-size",
        "--workers",
        "--threads",
        "--torch-threads",
        "--device",
        "--max-body-size",
        "--max-image-pixels",
        "--log-level",
    ]:
        assert option in result.stdout
    assert "TORCH_SERVING_MAX_BODY_SIZE" in result.stdout


@pytest.mark.cuda
def test_cli_serves_the_example_on_cuda(model_root, tmp_path, example_body):
    port = free_port()
    options = ["--model-root", str(model_root), "--device", "cuda", "--workers", "2"]
    with running(cli_command(port, *options), port, tmp_path / "log") as server:
        for _ in range(4):
            doc = post(server, "model-example.pt", example_body).json()
            assert doc["result"]["value"]["out"][0][1]["value"] == [60, 33, 33]


def test_a_gunicorn_without_what_the_worker_relies_on_refuses_to_start(model_root, tmp_path):
    """A renamed gunicorn attribute stops the server at start, naming it, instead of failing in the event loop."""
    import gunicorn

    port = free_port()
    script = (
        "import gunicorn.workers.gthread as gthread\n"
        "del gthread.ThreadWorker.murder_keepalived\n"
        "from torch_serving.cli import main\n"
        f"raise SystemExit(main(['--model-root', {str(model_root)!r}, '--port', '{port}', '--workers', '1']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert (
        f"torch-serving's worker needs gunicorn 27 (pinned gunicorn>=27,<28); gunicorn {gunicorn.__version__} lacks"
        " ThreadWorker.murder_keepalived"
    ) in result.stdout + result.stderr
