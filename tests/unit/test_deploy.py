"""The Dockerfile and the deploy/ manifests: they parse, validate offline against the
Kubernetes schemas and KServe's SDK models, and agree with the server's settings and routes."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import falcon.testing
import grpc
import kubernetes_validate
import pytest
import requests
import yaml

from tests.integration.server import free_port, running
from tests.models import REPO
from torch_serving import Config
from torch_serving.app import create_app

KUBERNETES = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
INFERENCE_SERVICE = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
CONFIG_FIELDS = {"TORCH_SERVING_" + field.name.upper() for field in dataclasses.fields(Config)}


def runtime_stage() -> tuple[dict[str, str], list[str]]:
    """The ENV and CMD of the Dockerfile's last stage."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text[text.rindex("\nFROM ") :]
    env, command = {}, []
    for line in stage.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
        if line.startswith("CMD "):
            command = json.loads(line[4:])
    return env, command


def containers() -> list[tuple[str, dict]]:
    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    service = yaml.safe_load(INFERENCE_SERVICE.read_text())
    return [
        ("deployment", deployment["spec"]["template"]["spec"]["containers"][0]),
        ("inferenceservice", service["spec"]["predictor"]["containers"][0]),
    ]


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_manifests_validate_against_the_schemas(path):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, desired_version="1.33", strict=True)


def load_model(type_name: str, value):
    """Build the SDK model ``type_name`` from manifest data; a key the model does not know fails."""
    import kserve.models
    import kubernetes.client.models

    if type_name.startswith(("list[", "List[")):
        return [load_model(type_name[5:-1], item) for item in value]
    if type_name.lower().startswith("dict") or type_name in {"str", "int", "bool", "float", "object"}:
        return value
    model = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)
    attributes = {json_key: name for name, json_key in model.attribute_map.items()}
    unknown = set(value) - set(attributes)
    assert not unknown, f"{type_name} has no {sorted(unknown)}"
    return model(
        **{attributes[key]: load_model(model.openapi_types[attributes[key]], item) for key, item in value.items()}
    )


def test_the_inference_service_loads_into_kserves_model():
    import kserve
    import kubernetes.client

    document = yaml.safe_load(INFERENCE_SERVICE.read_text())
    service = load_model("V1beta1InferenceService", document)
    assert isinstance(service, kserve.V1beta1InferenceService)
    predictor = service.spec.predictor
    assert isinstance(predictor.containers[0], kubernetes.client.V1Container)
    assert predictor.containers[0].readiness_probe.http_get.path == "/v2/health/ready"


@pytest.mark.parametrize(("where", "container"), containers(), ids=lambda c: c if isinstance(c, str) else "")
def test_manifests_agree_with_the_server(where, container, tmp_path):
    env = {item["name"]: item["value"] for item in container["env"]}
    assert set(env) <= CONFIG_FIELDS
    config = Config.from_env({**env, "TORCH_SERVING_MODEL_ROOT": str(tmp_path)})
    port = container["ports"][0]["containerPort"]
    assert config.port == port == 8080
    grpc_ports = [item["containerPort"] for item in container["ports"] if item.get("name") == "grpc"]
    assert grpc_ports == ([config.grpc_port] if config.grpc_port else [])
    assert container["volumeMounts"][0]["mountPath"] == env["TORCH_SERVING_MODEL_ROOT"]
    app = create_app(config)
    assert app.preload.wait(30)  # the manifests preload: readiness waits for it
    client = falcon.testing.TestClient(app)
    for probe in ("readinessProbe", "livenessProbe"):
        if probe in container:
            assert client.simulate_get(container[probe]["httpGet"]["path"]).status_code == 200


def test_scaling_matches_the_request_slots():
    service = yaml.safe_load(INFERENCE_SERVICE.read_text())["spec"]["predictor"]
    env = {item["name"]: item["value"] for item in service["containers"][0]["env"]}
    slots = int(env["TORCH_SERVING_WORKERS"]) * int(env["TORCH_SERVING_THREADS"])
    assert service["containerConcurrency"] == slots
    assert service["scaleMetric"] == "concurrency" and service["scaleTarget"] <= slots
    annotations = yaml.safe_load(INFERENCE_SERVICE.read_text())["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("8080", "/metrics")


def test_the_dockerfile_runtime_command_boots_a_server_that_answers(tmp_path):
    env, command = runtime_stage()
    assert env["TORCH_SERVING_PORT"] == "8080" and env["TORCH_SERVING_MODEL_ROOT"] == "/models"
    assert set(env) - {"PATH"} <= CONFIG_FIELDS
    assert command == ["torch-serving"]
    # Outside Docker: the venv's entry point, loopback, a free port and a folder for /models.
    assert env["TORCH_SERVING_GRPC_PORT"] == "8081"
    port, grpc_port = free_port(), free_port()
    overrides = {
        "TORCH_SERVING_HOST": "127.0.0.1",
        "TORCH_SERVING_PORT": str(port),
        "TORCH_SERVING_GRPC_PORT": str(grpc_port),
        "TORCH_SERVING_MODEL_ROOT": str(tmp_path),
    }
    environment = {name: value for name, value in env.items() if name != "PATH"} | overrides
    executable = str(Path(sys.executable).parent / command[0])
    with running([executable], port, tmp_path / "server.log", env=environment, cwd=tmp_path) as server:
        assert requests.get(server.url + "/v2/health/ready", timeout=30).json() == {"ready": True}
        assert requests.get(server.url + "/metrics", timeout=30).status_code == 200
        # The gRPC port answers HTTP/2 (its calls are tested in tests/grpc, which can import tritonclient.grpc).
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)


def test_make_serve_serves_the_examples_from_their_own_folder():
    import subprocess

    from tests.models import REPO

    planned = subprocess.run(["make", "-n", "serve"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    command = next(line for line in planned.splitlines() if "bin/torch-serving " in line)
    assert command.endswith(" --model-root models")  # not the repository, with its .venv
    assert " --grpc-port 8001 " in command  # where the README's gRPC examples call
