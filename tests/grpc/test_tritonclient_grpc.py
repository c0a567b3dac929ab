"""The Open Inference Protocol over gRPC through the stock tritonclient.grpc, against a real gunicorn
with two workers: every datatype, metadata, configuration, statistics, the repository, errors with
their status codes and REST's messages, deadlines, and what only a raw stub can send."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import ml_dtypes
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import WARM_UP_ROUNDS
from tests.grpc.conftest import GrpcServer
from tests.integration.server import cli_command, free_port, running
from tests.integration.test_metrics import value, wait_for
from tests.models import REPO, example_script
from tests.v2_cases import ARRAYS, INFER_ERRORS

# Where tritonclient's protobuf puts each datatype's typed contents (FP16 and BF16 have none).
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
MAX_BODY = 1024 * 1024
# A client that retries UNAVAILABLE calls and reconnects within 0.1 s, as one calling a server that
# restarts should (gRPC's retry policy, in the channel's service config).
RETRYING_CHANNEL = [
    (
        "grpc.service_config",
        json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{"service": "inference.GRPCInferenceService"}],
                        "retryPolicy": {
                            "maxAttempts": 5,
                            "initialBackoff": "0.1s",
                            "maxBackoff": "0.5s",
                            "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ]
            }
        ),
    ),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
]


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    port, grpc_port = free_port(), free_port()
    options = ["--model-root", str(model_root), "--grpc-port", str(grpc_port), "--workers", "2"]
    log = tmp_path_factory.mktemp("grpc-logs") / "server.log"
    with running(cli_command(port, *options, "--max-body-size", "1MiB"), port, log) as running_server:
        yield GrpcServer(running_server, grpc_port)


@pytest.fixture(scope="module")
def triton(server):
    client = server.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server):
    """The protocol's raw stub, for what tritonclient never sends."""
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", -1)]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def input_of(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def failure(call) -> tuple[str, str]:
    """The status code and message of the tritonclient call that must fail."""
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value.status(), error.value.message()


def test_health_and_server_metadata(triton, server):
    assert triton.is_server_live() and triton.is_server_ready()
    rest = requests.get(f"{server.http.url}/v2", timeout=10).json()
    assert triton.get_server_metadata(as_json=True) == rest
    assert rest["name"] == "torch-serving" and rest["extensions"] == ["binary_tensor_data"]


def test_model_readiness_and_metadata_match_rest(triton, server):
    assert triton.is_model_ready("tiny") and triton.is_model_ready("tiny", "1")
    assert triton.is_model_ready("nested/triple")
    assert not triton.is_model_ready("nope") and not triton.is_model_ready("tiny", "2")
    assert not triton.is_model_ready("corrupt")
    for name in ("pair", "string_echo", "scalars"):
        rest = requests.get(f"{server.http.url}/v2/models/{name}", timeout=10).json()
        assert triton.get_model_metadata(name, as_json=True) == {
            **rest,
            "inputs": [{**tensor, "shape": [str(n) for n in tensor["shape"]]} for tensor in rest["inputs"]],
            "outputs": [{**tensor, "shape": [str(n) for n in tensor["shape"]]} for tensor in rest["outputs"]],
        }
    assert failure(lambda: triton.get_model_metadata("nope")) == (
        "StatusCode.NOT_FOUND",
        "no model file nope, nope.pt or nope.pt2 under the model root",
    )


@pytest.mark.parametrize("datatype", list(ARRAYS))
def test_every_datatype_through_echo(triton, datatype):
    array = ARRAYS[datatype]
    # A List[str] argument takes BYTES of any shape, row-major; it has no shape of its own.
    model = "string_echo" if datatype == "BYTES" else "echo"
    result = triton.infer(model, [input_of("x", array, datatype)])
    output = result.as_numpy("OUTPUT__0")
    assert result.get_output("OUTPUT__0").datatype == datatype
    if datatype == "BYTES":
        assert output.tolist() == array.flatten().tolist()
    else:
        assert output.shape == array.shape and output.dtype == array.dtype
        assert output.tobytes() == array.tobytes()


@pytest.mark.parametrize("datatype", list(CONTENTS))
def test_every_datatype_in_typed_contents(stub, datatype):
    array = ARRAYS[datatype]
    model = "string_echo" if datatype == "BYTES" else "echo"
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    getattr(tensor.contents, CONTENTS[datatype]).extend(array.flatten().tolist())
    reply = stub.ModelInfer(request)
    assert [(o.name, o.datatype) for o in reply.outputs] == [("OUTPUT__0", datatype)]
    raw = reply.raw_output_contents[0]
    if datatype == "BYTES":
        lengths, items, offset = [], [], 0
        while offset < len(raw):
            size = int.from_bytes(raw[offset : offset + 4], "little")
            items.append(raw[offset + 4 : offset + 4 + size])
            lengths.append(size)
            offset += 4 + size
        assert items == array.flatten().tolist()
    else:
        assert list(reply.outputs[0].shape) == list(array.shape)
        assert raw == array.tobytes()


def test_several_inputs_and_outputs_with_id_and_version(triton):
    a = np.array([[1.0, 2.0]], dtype=np.float32)
    b = np.array([[10.0, 20.0]], dtype=np.float32)
    inputs = [input_of("a", a, "FP32"), input_of("b", b, "FP32"), input_of("scale", np.array([0.5]), "FP64")]
    result = triton.infer("pair", inputs, request_id="req-42", model_version="1")
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-42", "pair", "1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), a + b * 0.5)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), a * b)
    subset = triton.infer("pair", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT__1")])
    assert [output.name for output in subset.get_response().outputs] == ["OUTPUT__1"]
    by_position = triton.infer(
        "pair",
        [
            input_of("INPUT__0", np.array([3.0], np.float32), "FP32"),
            input_of("INPUT__1", np.ones(1, np.float32), "FP32"),
        ],
    )
    np.testing.assert_array_equal(by_position.as_numpy("OUTPUT__0"), [4.0])


def test_bf16_and_the_example_package(triton):
    x = np.array([[1.5, -2.0]], dtype=ml_dtypes.bfloat16)
    result = triton.infer("echo", [input_of("x", x, "BF16")])
    assert result.as_numpy("OUTPUT__0").tobytes() == x.tobytes()


@pytest.mark.parametrize(("model", "inputs", "status", "code", "message"), INFER_ERRORS)
def test_errors_carry_rests_message_under_tritons_code(triton, server, model, inputs, status, code, message):
    tensors = [input_of(name, array, datatype) for name, array, datatype in inputs]
    got = failure(lambda: triton.infer(model, tensors))
    rest = requests.post(
        f"{server.http.url}/v2/models/{model}/infer",
        json={"inputs": [{"name": n, "shape": list(a.shape), "datatype": d, "data": a.tolist()} for n, a, d in inputs]},
        timeout=30,
    )
    assert rest.status_code == status
    assert got == (f"StatusCode.{code}", rest.json()["error"])
    if message is not None:
        assert got[1] == message


def test_configuration_matches_rest(triton, server):
    for name in ("pair", "string_echo", "batch_slow", "slow_pair"):
        rest = requests.get(f"{server.http.url}/v2/models/{name}/config", timeout=10).json()
        config = triton.get_model_config(name, as_json=True)["config"]
        assert config["name"] == rest["name"] and config["platform"] == rest["platform"]
        assert config["backend"] == "pytorch"
        assert config.get("max_batch_size", 0) == rest["max_batch_size"]
        assert [(i["name"], i["data_type"], [int(n) for n in i["dims"]]) for i in config["input"]] == [
            (i["name"], i["data_type"], i["dims"]) for i in rest["input"]
        ]
        assert config["instance_group"] == [
            {"count": group["count"], "kind": group["kind"]} for group in rest["instance_group"]
        ]
    string_input = triton.get_model_config("string_echo", as_json=True)["config"]["input"][0]
    assert string_input["data_type"] == "TYPE_STRING"
    assert failure(lambda: triton.get_model_config("nope"))[0] == "StatusCode.NOT_FOUND"


def tcp_sockets() -> list[list[str]]:
    """The fields of every IPv4 and IPv6 TCP socket's row in /proc/net (local address at 1, state at 3,
    inode at 9)."""
    return [row.split() for table in ("tcp", "tcp6") for row in open(f"/proc/net/{table}").read().splitlines()[1:]]


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1's TCP ``port``, as IPv4 or v4-mapped IPv6 (which grpcio
    uses) sockets."""
    return sum(1 for row in tcp_sockets() if row[1].endswith(f"0100007F:{port:04X}") and row[3] == "0A")


def test_every_worker_listens_on_the_grpc_port(server):
    assert len(server.http.workers()) == 2
    # A worker listens once its preload is done, which the server's first answer does not wait for.
    deadline = time.monotonic() + 15
    while listeners(server.grpc_port) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listeners(server.grpc_port) == 2


def workers_holding_connections(server) -> list[int]:
    """The pid of the worker holding each established connection on the gRPC port."""
    inodes = {row[9] for row in tcp_sockets() if row[1].endswith(f":{server.grpc_port:04X}") and row[3] == "01"}
    holders = []
    for pid in server.http.workers():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    holders.append(pid)
    return holders


def test_a_processs_clients_share_one_worker_unless_each_has_its_own_connection(start_grpc):
    """docs/v2.md: tritonclient's clients in one process share one connection (grpcio's default),
    held by one worker; with ``grpc.use_local_subchannel_pool`` each has its own, and they spread over
    the workers."""
    x = [input_of("x", np.ones(2, np.float32), "FP32")]
    own = [("grpc.use_local_subchannel_pool", 1)]
    with start_grpc("--workers", "2") as server:
        # A worker listens once its preload is done, which the server's first answer does not wait for:
        # connections made before the second listens all go to the first.
        deadline = time.monotonic() + 15
        while listeners(server.grpc_port) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        for channel_args, connections, workers in ((None, 1, 1), (own, 16, 2)):
            clients = [
                grpcclient.InferenceServerClient(server.address, channel_args=channel_args) for _ in range(16)
            ]
            try:
                for client in clients:
                    assert client.infer("tiny", x).as_numpy("OUTPUT__0").tolist() == [3.0, 3.0]
                holders = workers_holding_connections(server)
                assert (len(holders), len(set(holders))) == (connections, workers)
            finally:
                for client in clients:
                    client.close()
            deadline = time.monotonic() + 10
            while workers_holding_connections(server) and time.monotonic() < deadline:
                time.sleep(0.1)


def test_statistics_count_both_workers_calls(triton, server):
    before = triton.get_inference_statistics("tiny", as_json=True)["model_stats"][0]
    x = input_of("x", np.array([1.0, 2.0], np.float32), "FP32")
    before_count = int(before.get("inference_count", 0))
    # Fresh channels land on either worker (SO_REUSEPORT spreads connections).
    for _ in range(12):
        with contextlib.closing(server.client()) as client:
            client.infer("tiny", [x])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = triton.get_inference_statistics("tiny", as_json=True)["model_stats"][0]
        if int(stats.get("inference_count", 0)) - before_count == 12:
            break
        time.sleep(0.2)
    assert int(stats["inference_count"]) - before_count == 12
    assert int(stats["inference_stats"]["success"]["count"]) >= 12
    assert stats["name"] == "tiny" and stats["version"] == "1"
    rest = requests.get(f"{server.http.url}/v2/models/tiny/stats", timeout=10).json()["model_stats"][0]
    assert int(stats["inference_count"]) == rest["inference_count"]


def test_repository_index_load_and_unload_over_both_workers(triton, stub, server):
    rest = requests.post(f"{server.http.url}/v2/repository/index", timeout=10).json()
    index = triton.get_model_repository_index(as_json=True)["models"]
    # Either worker may answer either call, and each has loaded what it has served.
    assert [m["name"] for m in index] == [m["name"] for m in rest]
    assert {m["state"] for m in index} <= {"READY", "UNAVAILABLE"}
    triton.load_model("pair")
    triton.unload_model("pair")
    # Both workers follow within their sync interval: every worker's index says it is not loaded.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = set()
        for _ in range(6):
            with contextlib.closing(server.client()) as client:
                ready = client.get_model_repository_index(as_json=True)["models"]
                states.add(next(m["state"] for m in ready if m["name"] == "pair"))
        if states == {"UNAVAILABLE"}:
            break
        time.sleep(0.3)
    assert states == {"UNAVAILABLE"}
    triton.load_model("pair")
    ready = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=10).models
    assert "pair" in [m.name for m in ready] and {m.state for m in ready} == {"READY"}
    assert failure(lambda: triton.load_model("nope"))[0] == "StatusCode.NOT_FOUND"
    code, message = failure(lambda: triton.load_model("corrupt"))
    assert code == "StatusCode.FAILED_PRECONDITION" and message


def test_a_client_deadline_shorter_than_the_forward_is_deadline_exceeded(triton, server):
    warm = [input_of("x", np.ones(1, np.float32), "FP32"), input_of("rounds", np.array([WARM_UP_ROUNDS]), "INT64")]
    triton.infer("slow", warm)
    long = [input_of("x", np.ones(1, np.float32), "FP32"), input_of("rounds", np.array([3000]), "INT64")]
    code, _ = failure(lambda: triton.infer("slow", long, client_timeout=0.5))
    assert code == "StatusCode.DEADLINE_EXCEEDED"

    # The server, not only the client, gave up at the client's deadline: it answered the call 504
    # (its --timeout is 60 s, far past the forward's end).
    def timed_out(found: dict) -> bool:
        return value(found, "torch_serving_requests_total", model="slow.pt", endpoint="infer", status="504") == 1

    assert timed_out(wait_for(server.http, timed_out))
    result = triton.infer("tiny", [input_of("x", np.ones(2, np.float32), "FP32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), [3.0, 3.0])


def hostile_requests() -> dict[str, tuple[service_pb2.ModelInferRequest, str]]:
    """What only a raw stub sends, with the status each must get."""

    def request(model="tiny", datatype="FP32", shape=(2,), raw=b"\0" * 8, name="x", inputs=1):
        message = service_pb2.ModelInferRequest(model_name=model)
        for i in range(inputs):
            message.inputs.add(name=name if inputs == 1 else f"x{i}", datatype=datatype, shape=list(shape))
            message.raw_input_contents.append(raw)
        return message

    invalid = "StatusCode.INVALID_ARGUMENT"
    return {
        "oversized": (request(shape=(MAX_BODY,), raw=b"\0" * (4 * MAX_BODY)), "StatusCode.RESOURCE_EXHAUSTED"),
        "raw length disagrees with shape": (request(raw=b"\0" * 7), invalid),
        "shape product overflows": (request(shape=(2**40, 2**40)), invalid),
        "negative dimension": (request(shape=(-2,)), invalid),
        "unknown datatype": (request(datatype="FP128"), invalid),
        "BOOL byte other than 0 or 1": (request(model="echo", datatype="BOOL", raw=b"\x00\x02"), invalid),
        "1,000 inputs": (request(inputs=1000, raw=b"\0" * 8), invalid),
        "a name of 1 MB": (request(model="m" * 1_000_000), "StatusCode.NOT_FOUND"),
        "raw contents without inputs": (
            service_pb2.ModelInferRequest(model_name="tiny", raw_input_contents=[b"\0" * 4]),
            invalid,
        ),
        "contents and raw contents at once": (
            _with_contents(request(), "fp32_contents", [1.0, 2.0]),
            invalid,
        ),
        "contents of another datatype": (
            _with_contents(request(), "int_contents", [1, 2]),
            invalid,
        ),
    }


def _with_contents(message, field, values):
    getattr(message.inputs[0].contents, field).extend(values)
    if field != "fp32_contents":
        del message.raw_input_contents[:]
    return message


HOSTILE = hostile_requests()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_requests_get_statuses_and_the_workers_live(stub, server, case):
    workers = sorted(server.http.workers())
    message, expected = HOSTILE[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(message, timeout=30)
    assert str(error.value.code()) == expected, error.value.details()
    assert 0 < len(error.value.details()) < 5000
    reply = stub.ModelInfer(tiny_request(np.ones(1, np.float32)), timeout=30)
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [3.0]
    assert sorted(server.http.workers()) == workers


def test_a_bad_call_names_a_missing_model_first_and_counts_against_a_present_one(stub, server):
    """As over REST: a call whose inputs the service refuses before the native side sees them (raw
    contents that do not match its inputs) is NOT_FOUND with REST's 404 message when its model is not
    there, and counted under its model's 400s when it is."""
    bad = HOSTILE["raw contents without inputs"][0]
    missing = service_pb2.ModelInferRequest(model_name="nope", raw_input_contents=bad.raw_input_contents)
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(missing, timeout=30)
    rest = requests.post(f"{server.http.url}/v2/models/nope/infer", json={"inputs": []}, timeout=30)
    assert rest.status_code == 404
    assert (str(error.value.code()), error.value.details()) == ("StatusCode.NOT_FOUND", rest.json()["error"])

    def counted(found: dict) -> float:
        return value(found, "torch_serving_requests_total", model="tiny.pt", endpoint="infer", status="400")

    # The metrics reach a scrape within a second or so: wait for the earlier tests' to settle.
    before, deadline = counted(wait_for(server.http, lambda found: True)), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(1.5)
        now = counted(wait_for(server.http, lambda found: True))
        if now == before:
            break
        before = now
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(bad, timeout=30)
    assert str(error.value.code()) == "StatusCode.INVALID_ARGUMENT"
    assert counted(wait_for(server.http, lambda found: counted(found) == before + 1)) == before + 1


def tiny_request(x: np.ndarray) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name="tiny")
    message.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    message.raw_input_contents.append(x.tobytes())
    return message


def test_the_message_limit_follows_max_body_size(stub):
    fits = np.zeros(MAX_BODY // 4 - 1024, np.float32)
    reply = stub.ModelInfer(tiny_request(fits), timeout=30)
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).size == fits.size


def test_sigterm_lets_calls_under_way_finish(start_grpc):
    with start_grpc("--workers", "1") as server:
        client = server.client()
        warm = [input_of("x", np.ones(1, np.float32), "FP32"), input_of("rounds", np.array([WARM_UP_ROUNDS]), "INT64")]
        client.infer("slow", warm)
        long = [input_of("x", np.ones(1, np.float32), "FP32"), input_of("rounds", np.array([400]), "INT64")]
        outcome = {}

        def call():
            try:
                outcome["result"] = client.infer("slow", long).as_numpy("OUTPUT__0").tolist()
            except InferenceServerException as error:
                outcome["error"] = error

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.3)
        os.kill(server.http.process.pid, signal.SIGTERM)
        caller.join(30)
        assert outcome == {"result": [2.0]}
        server.http.process.wait(30)
        assert "Traceback" not in server.http.log()


def python_blocks(text: str, heading: str) -> list[str]:
    """The Python code blocks of the section of ``text`` under ``heading``."""
    section = text[text.index(heading) :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.fixture(scope="module")
def example_server(tmp_path_factory):
    """A server over the models `make serve` makes for the V2 examples, with gRPC."""
    root = tmp_path_factory.mktemp("grpc-example-root")
    example_script("create_v2_models").main(str(root))
    port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("grpc-example-logs") / "server.log"
    command = cli_command(port, "--model-root", str(root), "--workers", "1", "--grpc-port", str(grpc_port))
    with running(command, port, log) as running_server:
        yield GrpcServer(running_server, grpc_port)


@pytest.mark.parametrize(
    ("document", "heading", "printed"),
    [
        ("docs/v2.md", "## Over gRPC", ["[[0.5 1. ]", " [1.5 2. ]]"]),
        ("README.md", "### Over gRPC, and KServe V1", ["[[2. 4.]", " [6. 8.]]"]),
    ],
)
def test_the_documented_tritonclient_grpc_example_runs_as_written(example_server, capsys, document, heading, printed):
    code = next(block for block in python_blocks((REPO / document).read_text(), heading) if "tritonclient" in block)
    capsys.readouterr()
    exec(compile(code.replace("localhost:8001", example_server.address), document, "exec"), {})
    assert capsys.readouterr().out.splitlines() == printed


def test_grpc_calls_share_a_batching_models_forwards(start_grpc):
    """Seven calls queued behind a running forward of a batching model share the next one, as REST ones do."""
    with start_grpc("--workers", "1") as server:

        def call(k: float) -> list:
            with contextlib.closing(server.client()) as client:
                inputs = [
                    input_of("x", np.full((1, 3), k, np.float32), "FP32"),
                    input_of("rounds", np.array([600]), "INT64"),
                ]
                return client.infer("batch_slow", inputs).as_numpy("OUTPUT__0").tolist()

        def executions() -> int:
            models = requests.get(server.http.url + "/cache", timeout=10).json()["stats"]["models"]
            return models.get("batch_slow.pt", {}).get("executions", 0)

        with ThreadPoolExecutor(8) as pool:
            leader = pool.submit(call, -1.0)
            deadline = time.monotonic() + 30
            while executions() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            answers = list(pool.map(call, [float(k) for k in range(7)]))
            assert leader.result() == [[0.0, 0.0, 0.0]]
        assert answers == [[[k + 1.0] * 3] for k in range(7)]
        assert executions() == 2


def test_calls_for_a_loaded_model_are_queued_without_a_thread_and_batched_with_rest_requests(start_grpc):
    """A call the native server does not answer at once (a batching model's here) is queued as the HTTP loop
    queues a request: no thread waits for it, and it joins the HTTP requests' batches."""
    with start_grpc("--workers", "1", "--threads", "1") as server:
        (worker,) = server.http.workers()
        url = server.http.url + "/serve?servable_identifier=batch_slow.pt"

        def inputs(k: float, rounds: int) -> list:
            x = input_of("x", np.full((1, 3), k, np.float32), "FP32")
            return [x, input_of("rounds", np.array([rounds]), "INT64")]

        def call(k: float) -> list:
            with contextlib.closing(server.client()) as client:
                return client.infer("batch_slow", inputs(k, 600)).as_numpy("OUTPUT__0").tolist()

        def executions() -> int:
            models = requests.get(server.http.url + "/cache", timeout=10).json()["stats"]["models"]
            return models.get("batch_slow.pt", {}).get("executions", 0)

        def own_threads() -> int:
            """The worker's threads but grpc++'s own (which it names, and starts as its polling needs):
            Python's and the native core's, which keep the process's name."""
            name = Path(f"/proc/{worker}/comm").read_text()
            return sum(Path(f"/proc/{worker}/task/{t}/comm").read_text() == name for t in os.listdir(f"/proc/{worker}/task"))

        with contextlib.closing(server.client()) as client:
            for _ in range(2):  # loaded; the second is queued, which starts the model's native threads
                client.infer("batch_slow", inputs(0.0, 1))
        before = executions()  # a thread of the worker's answers it: started here, before counting them
        threads = own_threads()
        with ThreadPoolExecutor(8) as pool:
            leader = pool.submit(call, -1.0)
            deadline = time.monotonic() + 30
            while executions() == before and time.monotonic() < deadline:
                time.sleep(0.01)
            x = {"type": "tensor", "shape": [1, 3], "value": [9.0] * 3, "data_type": "float32"}
            body = json.dumps([x, {"type": "scalar", "value": 600}])
            over_rest = pool.submit(requests.post, url, data=body, timeout=60)
            answers = list(pool.map(call, [float(k) for k in range(6)]))
            assert leader.result() == [[0.0, 0.0, 0.0]]
            rest_result = over_rest.result().json()["result"]
            assert (rest_result["shape"], rest_result["value"]) == ([1, 3], [10.0, 10.0, 10.0])
        assert answers == [[[k + 1.0] * 3] for k in range(6)]
        assert executions() == before + 2  # the leader's forward, then one for the six calls and the REST request
        assert own_threads() == threads


def test_sighup_replaces_the_workers_while_the_port_keeps_answering(start_grpc):
    """New workers listen beside the old ones before those stop, so a client calling throughout the
    replacement is answered all along (before the hand-over, thousands of calls failed while the
    port had no listener; before reload generations, a worker still booting when the reload came
    passed for a successor, and the old workers stopped at once). The client retries UNAVAILABLE, as
    gRPC advises against a server that restarts: Linux resets a connection still queued on an old
    worker's listener as it closes (unless ``net.ipv4.tcp_migrate_req`` is set, docs/v2.md), and
    a channel fails its calls fast until it reconnects. What gRPC's shutdown does to a call that
    reaches an old worker at the instant it stops (it cancels calls not yet handed to the service)
    can still cost one call per old worker, as CANCELLED."""
    with start_grpc("--workers", "2") as server:
        old = set(server.http.workers())
        client = grpcclient.InferenceServerClient(server.address, channel_args=RETRYING_CHANNEL)
        x = [input_of("x", np.array([1.0, 2.0], np.float32), "FP32")]
        failures, answers, stop = [], [], threading.Event()

        def call_throughout():
            while not stop.is_set():
                try:
                    answers.append(client.infer("tiny", x).as_numpy("OUTPUT__0").tolist())
                except InferenceServerException as error:
                    failures.append(error.status())

        caller = threading.Thread(target=call_throughout)
        caller.start()
        try:
            time.sleep(0.5)
            os.kill(server.http.process.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (set(server.http.workers()) & old == set()):
                time.sleep(0.2)
            answered_by_old_and_new = len(answers)
            time.sleep(1.0)  # calls on the new workers alone
        finally:
            stop.set()
            caller.join(30)
        assert set(server.http.workers()) & old == set()
        assert len(failures) <= len(old) and set(failures) <= {"StatusCode.CANCELLED"}
        assert answered_by_old_and_new > 50 and len(answers) > answered_by_old_and_new
        assert all(answer == [3.0, 5.0] for answer in answers)


def test_http_and_grpc_requests_share_the_workers_limit(start_grpc):
    """One count of the requests a worker holds, whichever transport brought them: an HTTP request
    still receiving its body holds the only place (before, gRPC counted its calls apart and answered
    this one), and while a gRPC call runs an HTTP request is refused with the same 503."""
    with start_grpc("--workers", "1", "--threads", "1", "--queue-size", "0") as server:
        x = [input_of("x", np.array([1.0, 2.0], np.float32), "FP32")]
        busy = "this worker holds 1 requests, its limit (--threads + --queue-size); retry later"
        with contextlib.closing(server.client()) as client:
            assert client.infer("tiny", x).as_numpy("OUTPUT__0").tolist() == [3.0, 5.0]
            with socket.create_connection(("127.0.0.1", server.http.port)) as uploading:
                uploading.sendall(
                    b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n["
                )
                # Taken by the worker, waiting for the rest of its body, once it has read the headers (a
                # loaded machine takes a while): until then a call is answered, in a moment of the place.
                deadline = time.monotonic() + 10
                while _answers(client, x) == [3.0, 5.0] and time.monotonic() < deadline:
                    time.sleep(0.2)
                with pytest.raises(InferenceServerException) as refused:
                    client.infer("tiny", x)
                assert (refused.value.status(), refused.value.message()) == ("StatusCode.UNAVAILABLE", busy)
            # The upload's connection closed: its place is free again.
            deadline = time.monotonic() + 10
            while _answers(client, x) != [3.0, 5.0] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _answers(client, x) == [3.0, 5.0]

            warm = [
                input_of("x", np.ones(1, np.float32), "FP32"),
                input_of("rounds", np.array([WARM_UP_ROUNDS]), "INT64"),
            ]
            client.infer("slow", warm)
            long = [
                input_of("x", np.ones(1, np.float32), "FP32"),
                input_of("rounds", np.array([3000]), "INT64"),
            ]  # ~1 s
            with ThreadPoolExecutor(1) as pool:
                running = pool.submit(client.infer, "slow", long)
                time.sleep(0.3)
                answer = requests.post(
                    f"{server.http.url}/serve",
                    params={"servable_identifier": "tiny.pt"},
                    data=b'{"type": "tensor", "value": [1.0]}',
                    timeout=30,
                )
                assert (answer.status_code, answer.json()["detail"]) == (503, busy)
                assert running.result().as_numpy("OUTPUT__0").tolist() == [2.0]


def _answers(client, inputs) -> object:
    try:
        return client.infer("tiny", inputs).as_numpy("OUTPUT__0").tolist()
    except InferenceServerException as error:
        return error.status()


def test_calls_beyond_the_workers_limit_are_unavailable_at_once_with_rests_message(start_grpc):
    with start_grpc("--workers", "1", "--threads", "1", "--queue-size", "1") as server:
        warm = [input_of("x", np.ones(1, np.float32), "FP32"), input_of("rounds", np.array([WARM_UP_ROUNDS]), "INT64")]
        with contextlib.closing(server.client()) as client:
            client.infer("slow", warm)
        long = [input_of("x", np.ones(1, np.float32), "FP32"), input_of("rounds", np.array([400]), "INT64")]

        finished: list[tuple[object, int]] = []  # (answer, order in which the calls ended)

        def call(_: int) -> None:
            with contextlib.closing(server.client()) as client:
                try:
                    answer: object = client.infer("slow", long).as_numpy("OUTPUT__0").tolist()
                except InferenceServerException as error:
                    answer = (error.status(), error.message())
                finished.append((answer, len(finished)))

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(call, range(6)))
        answered = [order for answer, order in finished if answer == [2.0]]
        refused = [(answer, order) for answer, order in finished if answer != [2.0]]
        assert len(answered) >= 2 and refused
        for answer, order in refused:
            assert answer == (
                "StatusCode.UNAVAILABLE",
                "this worker holds 2 requests, its limit (--threads + --queue-size); retry later",
            )
        # Refused at once: not one waited for a running call to end.
        assert max(order for _, order in refused) < min(answered)


def test_cancelled_calls_and_unloads_under_load_leave_every_worker_serving(start_grpc):
    """Calls on every path of the native server at once (a quick model's answered where they arrive, a batching
    model's queued, typed contents handed to Python), many cancelled by their client's deadline, while the
    batching model is unloaded and loaded again: each call ends with its answer or a status, no worker dies,
    and every worker answers afterwards."""
    with start_grpc("--workers", "2") as server:
        workers = server.http.workers()
        stop = time.monotonic() + 4
        outcomes: dict[str, set[str]] = {"tiny": set(), "typed": set(), "queued": set(), "repository": set()}

        def quick(client) -> None:
            x = input_of("x", np.array([1.0, 2.0], np.float32), "FP32")
            assert client.infer("tiny", [x]).as_numpy("OUTPUT__0").tolist() == [3.0, 5.0]

        def typed(client) -> None:
            with grpc.insecure_channel(server.address) as channel:
                message = service_pb2.ModelInferRequest(model_name="tiny")
                message.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0, 2.0])
                reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=30)
                assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [3.0, 5.0]

        def queued(client) -> None:
            x = [input_of("x", np.ones((1, 3), np.float32), "FP32"), input_of("rounds", np.array([50]), "INT64")]
            client.infer("batch_slow", x, client_timeout=0.02)

        def repository(client) -> None:
            client.unload_model("batch_slow")
            client.load_model("batch_slow")

        calls = {"tiny": quick, "typed": typed, "queued": queued, "repository": repository}

        def loop(kind: str) -> None:
            with contextlib.closing(server.client()) as client:
                while time.monotonic() < stop:
                    try:
                        calls[kind](client)
                        outcomes[kind].add("OK")
                    except InferenceServerException as error:
                        outcomes[kind].add(error.status())
                    except grpc.RpcError as error:
                        outcomes[kind].add(str(error.code()))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(loop, ["tiny", "tiny", "typed", "queued", "queued", "queued", "repository"]))
        assert outcomes["tiny"] == outcomes["typed"] == outcomes["repository"] == {"OK"}
        # Cut short by the client (or the server, at the same deadline), or answered in time.
        assert outcomes["queued"] <= {"OK", "StatusCode.DEADLINE_EXCEEDED"} and outcomes["queued"]
        assert server.http.workers() == workers
        own = [("grpc.use_local_subchannel_pool", 1)]
        answered_by = set()
        deadline = time.monotonic() + 15
        while answered_by != set(workers) and time.monotonic() < deadline:
            with contextlib.closing(grpcclient.InferenceServerClient(server.address, channel_args=own)) as client:
                quick(client)
                answered_by.update(workers_holding_connections(server))
        assert answered_by == set(workers)


def test_methods_not_served_are_unimplemented_and_malformed_messages_invalid(server):
    """docs/v2.md: Triton's methods this server does not serve answer UNIMPLEMENTED; a message that is not
    the method's request answers INVALID_ARGUMENT, whether the native server or Python reads it."""

    def failure(method: str, message: bytes) -> tuple[grpc.StatusCode, str]:
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as error:
                channel.unary_unary(f"/inference.GRPCInferenceService/{method}")(message, timeout=30)
        return error.value.code(), error.value.details()

    unknown = "/inference.GRPCInferenceService/TraceSetting"
    assert failure("TraceSetting", b"") == (grpc.StatusCode.UNIMPLEMENTED, f"unknown method {unknown}")
    truncated = b"\x0a\x05ti"  # model_name's five bytes cut short
    for method in ("ModelInfer", "ModelMetadata"):
        assert failure(method, truncated) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {method}Request",
        )
