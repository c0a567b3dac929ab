"""The V2 endpoints through the stock tritonclient[http], against a real gunicorn,
plus what only raw HTTP can send."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.server import serving
from tests.v2_cases import ARRAYS, INFER_ERRORS

# JSON can carry BYTES only as UTF-8 text, and tritonclient sends BF16 only as binary.
JSON_SAFE = {name: array for name, array in ARRAYS.items() if name != "BF16"}
JSON_SAFE["BYTES"] = np.array([["", "a", "ü"], ["spaces and \n", '"quoted"', "z"]], dtype=np.object_)


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    options = [
        "--model-root",
        str(model_root),
        "--workers",
        "2",
        "--threads",
        "4",
        "--max-body-size",
        "1MiB",
    ]
    with serving(tmp_path_factory, "tritonclient", *options) as running_server:
        yield running_server


def input_of(name: str, array: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_server_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "torch-serving" and "binary_tensor_data" in metadata["extensions"]


def test_model_readiness_and_metadata(triton):
    assert triton.is_model_ready("tiny") and triton.is_model_ready("tiny", "1")
    assert triton.is_model_ready("nested/triple")
    assert not triton.is_model_ready("nope") and not triton.is_model_ready("tiny", "2")
    assert not triton.is_model_ready("corrupt")
    metadata = triton.get_model_metadata("pair")
    assert metadata["platform"] == "pytorch_torchscript" and metadata["versions"] == ["1"]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("a", "FP32"),
        ("b", "FP32"),
        ("scale", "FP64"),
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["OUTPUT__0", "OUTPUT__1"]
    with pytest.raises(InferenceServerException) as error:
        triton.get_model_metadata("nope")
    assert error.value.status() == "404"
    assert error.value.message() == "no model file nope, nope.pt or nope.pt2 under the model root"


@pytest.mark.parametrize(
    ("datatype", "binary"),
    [(name, True) for name in ARRAYS] + [(name, False) for name in JSON_SAFE],
    ids=[f"{name}-binary" for name in ARRAYS] + [f"{name}-json" for name in JSON_SAFE],
)
def test_every_datatype_through_echo(triton, datatype, binary):
    array = (ARRAYS if binary else JSON_SAFE)[datatype]
    # A List[str] argument takes BYTES of any shape, row-major; it has no shape of its own.
    model = "string_echo" if datatype == "BYTES" else "echo"
    result = triton.infer(
        model,
        [input_of("x", array, datatype, binary)],
        outputs=[httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)],
    )
    output = result.as_numpy("OUTPUT__0")
    assert result.get_output("OUTPUT__0")["datatype"] == datatype
    if datatype == "BYTES":
        assert output.shape == (array.size,)
        assert output.tolist() == array.flatten().tolist()
    else:
        assert output.shape == array.shape
        assert output.dtype == array.dtype
        assert output.tobytes() == array.tobytes()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_several_inputs_and_outputs_with_id(triton, binary):
    a = np.array([[1.0, 2.0]], dtype=np.float32)
    b = np.array([[10.0, 20.0]], dtype=np.float32)
    scale = np.array([0.5])
    inputs = [
        input_of("a", a, "FP32", binary),
        input_of("b", b, "FP32", binary),
        input_of("scale", scale, "FP64", binary),
    ]
    # No requested outputs: tritonclient asks for all of them in binary.
    result = triton.infer("pair", inputs, request_id="req-42")
    assert result.get_response()["id"] == "req-42"
    assert result.get_response()["model_name"] == "pair" and result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), a + b * 0.5)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), a * b)


def test_inputs_by_position_and_an_explicit_version(triton):
    a, b = np.array([3.0], dtype=np.float32), np.array([4.0], dtype=np.float32)
    result = triton.infer(
        "pair",
        [input_of("INPUT__0", a, "FP32", True), input_of("INPUT__1", b, "FP32", False)],
        model_version="1",
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), [7.0])


def test_requested_output_subset(triton):
    inputs = [
        input_of("a", np.ones(2, np.float32), "FP32", True),
        input_of("b", np.full(2, 3, np.float32), "FP32", True),
    ]
    result = triton.infer(
        "pair",
        inputs,
        outputs=[httpclient.InferRequestedOutput("OUTPUT__1", binary_data=False)],
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT__1"]
    assert result.as_numpy("OUTPUT__0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), [3.0, 3.0])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_strings_in_and_out(triton, binary):
    words = np.array(["alpha", "beta"] if not binary else [b"alpha", b"beta"], dtype=np.object_)
    prefix = np.array(["re-"] if not binary else [b"re-"], dtype=np.object_)
    outputs = [httpclient.InferRequestedOutput(f"OUTPUT__{k}", binary_data=binary) for k in range(3)]
    result = triton.infer(
        "words",
        [
            input_of("words", words, "BYTES", binary),
            input_of("prefix", prefix, "BYTES", binary),
        ],
        outputs=outputs,
    )
    decode = (lambda v: v.decode()) if binary else str
    assert [decode(v) for v in result.as_numpy("OUTPUT__0")] == ["re-alpha", "re-beta"]
    assert [decode(v) for v in result.as_numpy("OUTPUT__1")] == ["RE-"]
    assert result.as_numpy("OUTPUT__2").tolist() == [2]


def test_scalar_dict_and_list_models(triton):
    result = triton.infer(
        "scalars",
        [
            input_of("count", np.array([4], np.int64), "INT64", True),
            input_of("ratio", np.array([1.0], np.float64), "FP64", False),
            input_of("flag", np.array([False]), "BOOL", True),
        ],
    )
    assert [result.as_numpy(f"OUTPUT__{k}").tolist() for k in range(3)] == [
        [8],
        [0.5],
        [True],
    ]
    result = triton.infer("dict_output", [input_of("w", np.array([1, 2], np.int16), "INT16", True)])
    assert result.as_numpy("w_doubled").tolist() == [2, 4]
    result = triton.infer("list_output", [input_of("x", np.array([1.0], np.float32), "FP32", True)])
    assert [result.as_numpy(f"OUTPUT__{k}").tolist() for k in range(3)] == [
        [1.0],
        [2.0],
        [3.0],
    ]


@pytest.mark.parametrize(("model", "inputs", "status", "code", "message"), INFER_ERRORS)
def test_errors_reach_the_client(triton, model, inputs, status, code, message):
    with pytest.raises(InferenceServerException) as error:
        triton.infer(
            model,
            [input_of(name, array, datatype, True) for name, array, datatype in inputs],
        )
    assert error.value.status() == str(status)
    if message is not None:
        assert error.value.message() == message


def test_unknown_requested_output_and_version(triton):
    x = [input_of("x", np.ones(1, np.float32), "FP32", True)]
    with pytest.raises(InferenceServerException) as error:
        triton.infer("tiny", x, outputs=[httpclient.InferRequestedOutput("OUTPUT__9")])
    assert error.value.message() == "requested output 'OUTPUT__9' is not among the model's outputs: OUTPUT__0"
    with pytest.raises(InferenceServerException) as error:
        triton.infer("tiny", x, model_version="3")
    assert (error.value.status(), error.value.message()) == (
        "404",
        "model tiny has no version '3'; its only version is '1'",
    )


# Raw HTTP: what a well-behaved client never sends.


def test_percent_encoded_model_name(server):
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}]}
    answer = requests.post(f"{server.url}/v2/models/nested%2Ftriple/infer", json=body, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["model_name"] == "nested/triple"
    assert answer.json()["outputs"][0]["data"] == [6]


def test_binary_framing_errors_over_http(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    url = f"{server.url}/v2/models/tiny/infer"
    past = requests.post(
        url,
        data=header + bytes(8),
        headers={"Inference-Header-Content-Length": str(len(header) + 9)},
        timeout=30,
    )
    assert (past.status_code, past.json()) == (
        400,
        {
            "error": f"Inference-Header-Content-Length is {len(header) + 9}, past the end of the {len(header) + 8}-byte body"
        },
    )
    short = requests.post(
        url,
        data=header + bytes(5),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )
    assert (short.status_code, short.json()) == (
        400,
        {"error": "binary_data_size of input 'x' is 8 bytes, but only 5 bytes of binary data remain in the body"},
    )
    good = requests.post(
        url,
        data=header + np.array([1, 2], np.float32).tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )
    assert good.json()["outputs"][0]["data"] == [3, 5]


def test_body_cut_short_is_400_and_the_server_keeps_serving(server):
    header = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}).encode()
    request = (
        f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(header) + 50}\r\n\r\n".encode()
        + header
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    assert answer.rstrip().endswith(
        f'{{"error": "received {len(header)} of the {len(header) + 50} bytes Content-Length announced"}}'.encode()
    )
    assert requests.get(f"{server.url}/v2/health/ready", timeout=30).status_code == 200


def test_concurrent_clients_get_their_own_answers(server):
    # Eight clients at once, mixing models, forms and sizes: every answer
    # must be the one for its own request.
    def client_session(seed: int) -> int:
        rng = np.random.default_rng(seed)
        triton = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            for k in range(25):
                binary = bool(k % 2)
                x = rng.standard_normal((1, int(rng.integers(1, 2000)))).astype(np.float32)
                if k % 3 == 0:
                    result = triton.infer("tiny", [input_of("x", x, "FP32", binary)], request_id=f"{seed}-{k}")
                    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), x * 2 + 1)
                elif k % 3 == 1:
                    result = triton.infer("pair", [input_of("a", x, "FP32", binary), input_of("b", x, "FP32", True)])
                    np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), x * x)
                else:
                    result = triton.infer("echo", [input_of("x", x.astype(np.float16), "FP16", binary)])
                    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), x.astype(np.float16))
                if k % 3 == 0:
                    assert result.get_response()["id"] == f"{seed}-{k}"
            return 25
        finally:
            triton.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(client_session, range(8))) == 200
