"""The Open Inference Protocol endpoints through Falcon's test client, by hand:
JSON and binary framing, input binding, output naming, metadata and errors."""

from __future__ import annotations

import json
import struct

import falcon.testing
import numpy as np
import pytest
import torch

import torch_serving
from tests.models import example_script
from torch_serving import Config, create_app

HEADER = "Inference-Header-Content-Length"

# Every V2 datatype, the torch dtype it becomes, and sample values.
DATATYPES = [
    ("BOOL", torch.bool, [True, False, True, True, False, False]),
    ("UINT8", torch.uint8, [0, 1, 127, 128, 254, 255]),
    ("INT8", torch.int8, [-128, -1, 0, 1, 64, 127]),
    ("INT16", torch.int16, [-32768, -2, 0, 3, 1000, 32767]),
    ("INT32", torch.int32, [-(2**31), -5, 0, 7, 2**20, 2**31 - 1]),
    ("INT64", torch.int64, [-(2**63), -9, 0, 11, 2**53 + 1, 2**63 - 1]),
    ("FP16", torch.float16, [-65504.0, -1.5, 0.0, 0.099975586, 1.0, 65504.0]),
    ("BF16", torch.bfloat16, [-3.0e38, -1.5, 0.0, 0.10009765625, 1.0, 3.0e38]),
    ("FP32", torch.float32, [-3.4e38, -1.5, 0.0, 0.1, 1.0, 19.269815]),
    ("FP64", torch.float64, [-1.7e308, -1.5, 0.0, 0.1, 1.0, 2.0**-1074]),
]


@pytest.fixture
def client(model_root) -> falcon.testing.TestClient:
    config = Config(model_root=model_root, model_capacity=4, buffer_size=1, max_body_size=1 << 16)
    return falcon.testing.TestClient(create_app(config))


def tensor_input(name: str, tensor: torch.Tensor, datatype: str) -> dict:
    return {
        "name": name,
        "shape": list(tensor.shape),
        "datatype": datatype,
        "data": tensor.flatten().tolist(),
    }


def infer(
    client,
    model: str,
    request: dict,
    binary: bytes = b"",
    json_padding: int = 0,
    **kwargs,
):
    """POST ``request`` to ``model``'s infer endpoint, followed by ``binary`` when given."""
    header = json.dumps(request).encode() + b" " * json_padding
    headers = {HEADER: str(len(header))} if binary or json_padding else {}
    headers.update(kwargs.pop("headers", {}))
    return client.simulate_post(f"/v2/models/{model}/infer", body=header + binary, headers=headers, **kwargs)


def split_response(result) -> tuple[dict, dict[str, bytes]]:
    """Return a response's JSON and the binary data of each output by name."""
    length = int(result.headers.get(HEADER.lower(), len(result.content)))
    doc = json.loads(result.content[:length])
    buffers, offset = {}, length
    for output in doc["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            buffers[output["name"]] = result.content[offset : offset + size]
            offset += size
    assert offset == len(result.content)
    return doc, buffers


def assert_v2_error(result, status: int, message: str) -> None:
    assert result.status_code == status
    assert result.headers["content-type"] == "application/json"
    assert result.json == {"error": message}


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_server_metadata_and_health(client):
    doc = client.simulate_get("/v2").json
    assert doc["name"] == "torch-serving" and doc["extensions"] == ["binary_tensor_data"]
    assert doc["version"] == torch_serving.__version__
    assert client.simulate_get("/v2/health/live").json == {"live": True}
    assert client.simulate_get("/v2/health/ready").json == {"ready": True}


def test_model_metadata_from_the_schema(client):
    assert client.simulate_get("/v2/models/kinds").json == {
        "name": "kinds",
        "versions": ["1"],
        "platform": "pytorch_torchscript",
        "inputs": [
            {"name": "ints", "datatype": "INT64", "shape": [-1]},
            {"name": "ratio", "datatype": "FP64", "shape": [1]},
            {"name": "flag", "datatype": "BOOL", "shape": [1]},
            {"name": "maybe", "datatype": "FP32", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [1]},
        ],
        "outputs": [
            {"name": "OUTPUT__0", "datatype": "INT64", "shape": [-1]},
            {"name": "OUTPUT__1", "datatype": "FP64", "shape": [1]},
            {"name": "OUTPUT__2", "datatype": "BOOL", "shape": [1]},
            {"name": "OUTPUT__3", "datatype": "FP32", "shape": [-1]},
            {"name": "OUTPUT__4", "datatype": "BYTES", "shape": [1]},
        ],
    }


@pytest.mark.parametrize(
    ("path", "inputs", "outputs"),
    [
        ("/v2/models/tiny.pt/versions/1", ["x"], ["OUTPUT__0"]),
        ("/v2/models/nested/triple", ["x"], ["OUTPUT__0"]),
        ("/v2/models/pair", ["a", "b", "scale"], ["OUTPUT__0", "OUTPUT__1"]),
        # The names of dict entries and the length of a list are known only when the model runs.
        ("/v2/models/list_output", ["x"], []),
        ("/v2/models/dict_output", [], []),
    ],
)
def test_model_metadata_names(client, path, inputs, outputs):
    doc = client.simulate_get(path).json
    assert [i["name"] for i in doc["inputs"]] == inputs
    assert [o["name"] for o in doc["outputs"]] == outputs


def test_model_ready_and_not_found(client):
    assert client.simulate_get("/v2/models/tiny/ready").json == {
        "name": "tiny",
        "ready": True,
    }
    assert client.simulate_get("/v2/models/tiny/versions/1/ready").status_code == 200
    assert_v2_error(
        client.simulate_get("/v2/models/nope/ready"),
        404,
        "no model file nope, nope.pt or nope.pt2 under the model root",
    )
    assert_v2_error(
        client.simulate_get("/v2/models/tiny/versions/2"),
        404,
        "model tiny has no version '2'; its only version is '1'",
    )
    unloadable = client.simulate_get("/v2/models/corrupt/ready")
    assert unloadable.status_code == 422
    assert unloadable.json["error"].startswith("corrupt is not a loadable TorchScript module: PytorchStreamReader")


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/../x/ready", 400, "model name must not contain '..' components, got '../x'"),
        ("/v2/models/%2e%2e/x/infer", 400, "model name must not contain '..' components, got '../x'"),
        ("/v2/models//etc/passwd/ready", 400, "model name must be relative to the model root, got '/etc/passwd'"),
        ("/v2/models/a%00b", 400, "model name contains a NUL character"),
        ("/v2/models/outside/ready", 404, "no model file outside, outside.pt or outside.pt2 under the model root"),
    ],
)
def test_model_names_are_confined_to_the_root(tmp_path, path, status, message):
    (tmp_path / "outside.pt").symlink_to("/etc/passwd")
    client = falcon.testing.TestClient(create_app(Config(model_root=tmp_path)))
    method = client.simulate_post if path.endswith("/infer") else client.simulate_get
    assert_v2_error(method(path), status, message)


def test_infer_json_with_id_flat_and_nested_data(client):
    flat = {
        "id": "req-7",
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
    }
    nested = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}
    first, second = infer(client, "tiny", flat), infer(client, "tiny.pt", nested)
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert HEADER.lower() not in first.headers
    assert first.json == {
        "model_name": "tiny",
        "model_version": "1",
        "id": "req-7",
        "outputs": [
            {
                "name": "OUTPUT__0",
                "datatype": "FP32",
                "shape": [2, 2],
                "data": [3, 5, 7, 9],
            }
        ],
    }
    assert second.json["outputs"] == first.json["outputs"] and "id" not in second.json


@pytest.mark.parametrize(("datatype", "dtype", "values"), DATATYPES, ids=[d[0] for d in DATATYPES])
def test_every_datatype_round_trips_in_json_and_binary(client, datatype, dtype, values):
    tensor = torch.tensor(values, dtype=dtype).reshape(2, 3)
    if datatype != "BF16":
        result = infer(client, "echo", {"inputs": [tensor_input("x", tensor, datatype)]})
        assert result.status_code == 200, result.text
        (output,) = result.json["outputs"]
        assert (output["datatype"], output["shape"]) == (datatype, [2, 3])
        assert torch.equal(torch.tensor(output["data"], dtype=dtype).reshape(2, 3), tensor)
    raw = tensor.view(torch.uint8).numpy().tobytes() if dtype != torch.bool else tensor.numpy().tobytes()
    request = {
        "inputs": [
            {
                "name": "x",
                "shape": [2, 3],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    result = infer(client, "echo", request, raw)
    assert result.status_code == 200, result.text
    assert result.headers["content-type"] == "application/octet-stream"
    doc, buffers = split_response(result)
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": len(raw)}
    assert buffers["OUTPUT__0"] == raw


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_binary_input_at_any_alignment(client, padding):
    # Whether the data lands aligned (a view of the body) or not (a copy),
    # the model sees the same values.
    values = torch.arange(12, dtype=torch.float64)
    raw = values.numpy().tobytes()
    request = {
        "inputs": [
            {
                "name": "x",
                "shape": [12],
                "datatype": "FP64",
                "parameters": {"binary_data_size": 96},
            }
        ]
    }
    result = infer(client, "tiny", request, raw, json_padding=padding + 1)
    assert result.status_code == 200, result.text
    assert result.json["outputs"][0]["data"] == (values * 2 + 1).tolist()


def test_inputs_by_name_and_by_position_with_an_optional_argument(client):
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([10.0, 20.0])
    by_name = infer(
        client,
        "pair",
        {"inputs": [tensor_input("b", b, "FP32"), tensor_input("a", a, "FP32")]},
    )
    by_position = infer(
        client,
        "pair",
        {
            "inputs": [
                tensor_input("INPUT__0", a, "FP32"),
                tensor_input("INPUT__1", b, "FP32"),
            ]
        },
    )
    assert by_name.json["outputs"] == by_position.json["outputs"]
    assert [o["data"] for o in by_name.json["outputs"]] == [[11, 22], [10, 40]]
    scaled = infer(
        client,
        "pair",
        {
            "inputs": [
                tensor_input("a", a, "FP32"),
                tensor_input("b", b, "FP32"),
                tensor_input("scale", torch.tensor([0.5]), "FP64"),
            ]
        },
    )
    assert scaled.json["outputs"][0]["data"] == [6, 12]


def test_requested_outputs_choose_subset_order_and_form(client):
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    request = {
        "inputs": [tensor_input("a", a, "FP32"), tensor_input("b", b, "FP32")],
        "outputs": [
            {"name": "OUTPUT__1", "parameters": {"binary_data": True}},
            {"name": "OUTPUT__0"},
        ],
    }
    doc, buffers = split_response(infer(client, "pair", request))
    assert [o["name"] for o in doc["outputs"]] == ["OUTPUT__1", "OUTPUT__0"]
    assert np.frombuffer(buffers["OUTPUT__1"], dtype=np.float32).tolist() == [3, 8]
    assert doc["outputs"][1]["data"] == [4, 6]
    only = infer(client, "pair", {**request, "outputs": [{"name": "OUTPUT__0"}]})
    assert [o["name"] for o in only.json["outputs"]] == ["OUTPUT__0"]


def test_strings_in_json_and_binary(client):
    request = {
        "inputs": [
            {
                "name": "words",
                "shape": [3],
                "datatype": "BYTES",
                "data": ["a", "b c", "ü"],
            },
            {"name": "prefix", "shape": [1], "datatype": "BYTES", "data": ["p-"]},
        ]
    }
    result = infer(client, "words", request)
    assert result.json["outputs"] == [
        {
            "name": "OUTPUT__0",
            "datatype": "BYTES",
            "shape": [3],
            "data": ["p-a", "p-b c", "p-ü"],
        },
        {"name": "OUTPUT__1", "datatype": "BYTES", "shape": [1], "data": ["P-"]},
        {"name": "OUTPUT__2", "datatype": "INT64", "shape": [1], "data": [3]},
    ]
    words = serialize_bytes([b"x", b"", b"\xff\x00"])
    prefix = serialize_bytes([b"q"])
    binary_request = {
        "inputs": [
            {
                "name": "words",
                "shape": [3],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(words)},
            },
            {
                "name": "prefix",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(prefix)},
            },
        ],
        "parameters": {"binary_data_output": True},
    }
    _, buffers = split_response(infer(client, "words", binary_request, words + prefix))
    assert buffers["OUTPUT__0"] == serialize_bytes([b"qx", b"q", b"q\xff\x00"])
    assert buffers["OUTPUT__1"] == serialize_bytes([b"Q"])
    assert np.frombuffer(buffers["OUTPUT__2"], dtype=np.int64).tolist() == [3]


def test_scalar_arguments_and_results(client):
    request = {
        "inputs": [
            {"name": "count", "shape": [1], "datatype": "INT32", "data": [21]},
            {"name": "ratio", "shape": [], "datatype": "FP32", "data": [3]},
            {"name": "flag", "shape": [1, 1], "datatype": "BOOL", "data": [[True]]},
        ]
    }
    assert infer(client, "scalars", request).json["outputs"] == [
        {"name": "OUTPUT__0", "datatype": "INT64", "shape": [1], "data": [42]},
        {"name": "OUTPUT__1", "datatype": "FP64", "shape": [1], "data": [1.5]},
        {"name": "OUTPUT__2", "datatype": "BOOL", "shape": [1], "data": [False]},
    ]


def test_list_dict_and_tuple_outputs(client):
    x = tensor_input("x", torch.tensor([1, 2]), "INT64")
    assert [(o["name"], o["data"]) for o in infer(client, "list_output", {"inputs": [x]}).json["outputs"]] == [
        ("OUTPUT__0", [1, 2]),
        ("OUTPUT__1", [2, 4]),
        ("OUTPUT__2", [3, 6]),
    ]
    request = {
        "inputs": [
            tensor_input("left", torch.tensor([1.5]), "FP64"),
            tensor_input("right", torch.tensor([2]), "INT8"),
        ]
    }
    outputs = infer(client, "dict_output", request).json["outputs"]
    assert [(o["name"], o["datatype"], o["data"]) for o in outputs] == [
        ("left_doubled", "FP64", [3]),
        ("right_doubled", "INT8", [4]),
    ]
    outputs = infer(
        client,
        "kinds",
        {
            "inputs": [
                {"name": "ints", "shape": [2], "datatype": "INT64", "data": [4, 5]},
                {"name": "ratio", "shape": [1], "datatype": "FP64", "data": [0.25]},
                {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [True]},
                {"name": "maybe", "shape": [1], "datatype": "FP16", "data": [0.5]},
            ]
        },
    ).json["outputs"]
    assert [(o["name"], o["datatype"], o["shape"], o["data"]) for o in outputs] == [
        ("OUTPUT__0", "INT64", [2], [4, 5]),
        ("OUTPUT__1", "FP64", [1], [0.25]),
        ("OUTPUT__2", "BOOL", [1], [True]),
        ("OUTPUT__3", "FP16", [1], [0.5]),
        ("OUTPUT__4", "BYTES", [1], ["default"]),
    ]


def test_optional_argument_left_out_is_none(client):
    request = {
        "inputs": [
            {"name": "ints", "shape": [0], "datatype": "INT64", "data": []},
            {"name": "ratio", "shape": [1], "datatype": "INT64", "data": [2]},
            {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [False]},
        ],
        "outputs": [{"name": "OUTPUT__0"}, {"name": "OUTPUT__1"}],
    }
    assert [(o["datatype"], o["shape"], o["data"]) for o in infer(client, "kinds", request).json["outputs"]] == [
        ("INT64", [0], []),
        ("FP64", [1], [2]),
    ]
    request["outputs"] = [{"name": "OUTPUT__3"}]
    assert_v2_error(
        infer(client, "kinds", request),
        500,
        "output 'OUTPUT__3' is a NoneType, which V2 cannot express as a tensor",
    )


def pair_inputs(**overrides) -> list[dict]:
    inputs = {
        "a": tensor_input("a", torch.tensor([1.0]), "FP32"),
        "b": tensor_input("b", torch.tensor([2.0]), "FP32"),
    }
    inputs.update(overrides)
    return [value for value in inputs.values() if value is not None]


PAIR_SIGNATURE = "forward(a: Tensor, b: Tensor, scale: float = 1.0) -> Tuple[Tensor, Tensor]"


@pytest.mark.parametrize(
    ("model", "request_doc", "message"),
    [
        (
            "pair",
            {"inputs": pair_inputs(b=None)},
            f"missing input for argument 'b' (position 1) of forward, which expects Tensor; signature: {PAIR_SIGNATURE}",
        ),
        (
            "pair",
            {"inputs": pair_inputs(c=tensor_input("c", torch.tensor([1.0]), "FP32"))},
            f"input 'c' matches no argument of forward; its arguments are a, b, scale (or INPUT__0 to INPUT__2 by position); signature: {PAIR_SIGNATURE}",
        ),
        (
            "pair",
            {"inputs": pair_inputs(c=tensor_input("INPUT__0", torch.tensor([1.0]), "FP32"))},
            "inputs 'a' and 'INPUT__0' both give argument 'a' of forward",
        ),
        (
            "pair",
            {"inputs": pair_inputs(c=tensor_input("INPUT__7", torch.tensor([1.0]), "FP32"))},
            f"input 'INPUT__7' names position 7, but forward takes 3 argument(s); signature: {PAIR_SIGNATURE}",
        ),
        (
            "pair",
            {"inputs": pair_inputs(a={"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]})},
            "input 'a' (BYTES, shape [1]) cannot be argument 'a' of forward, which expects Tensor: BYTES cannot be a Tensor",
        ),
        (
            "scalars",
            {"inputs": [tensor_input("count", torch.tensor([1.0]), "FP32")]},
            "input 'count' (FP32, shape [1]) cannot be argument 'count' of forward, which expects int: give it as an integer datatype",
        ),
        (
            "scalars",
            {"inputs": [tensor_input("count", torch.tensor([1, 2]), "INT64")]},
            "input 'count' (INT64, shape [2]) cannot be argument 'count' of forward, which expects int: it must hold exactly one element",
        ),
        (
            "pair",
            {"inputs": pair_inputs(), "outputs": [{"name": "nope"}]},
            "requested output 'nope' is not among the model's outputs: OUTPUT__0, OUTPUT__1",
        ),
        (
            "raising",
            {"inputs": [tensor_input("x", torch.tensor([-1.0]), "FP32")]},
            "forward raised: builtins.ValueError: inputs must not sum to a negative number",
        ),
    ],
)
def test_inputs_that_do_not_fit_the_model(client, model, request_doc, message):
    assert_v2_error(infer(client, model, request_doc), 400, message)


@pytest.mark.parametrize(
    ("request_doc", "message"),
    [
        ({}, 'missing key "inputs" at body'),
        (
            {"inputs": [], "extra": 1},
            'unknown key "extra" (expected id, model_name, model_version, parameters, inputs or outputs) at body',
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]},
            "input 'x' has neither \"data\" nor parameters.binary_data_size at body.inputs[0]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "UINT32", "data": [1]}]},
            'unknown datatype "UINT32" (expected one of BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES) '
            "at body.inputs[0].datatype",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 2],
                        "datatype": "FP32",
                        "data": [1, 2, 3],
                    }
                ]
            },
            "input 'x' has 3 value(s), but shape [2, 2] needs 4",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2],
                        "datatype": "FP32",
                        "data": [[1], [2, 3]],
                    }
                ]
            },
            "ragged nested value: expected an array of length 1, found an array of length 2 at body.inputs[0].data[1]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]},
            "expected a non-negative integer dimension, found -1 at body.inputs[0].shape[0]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]},
            "expected an integer in [-128, 127] for int8, found 300 at body.inputs[0].data[0]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]},
            "expected a string or an array of strings, found 1 at body.inputs[0].data[0]",
        ),
        (
            {
                "inputs": [
                    tensor_input("x", torch.ones(1), "FP32"),
                    tensor_input("x", torch.ones(1), "FP32"),
                ]
            },
            'duplicate input name "x" at body.inputs[1].name',
        ),
        (
            {
                "inputs": [tensor_input("x", torch.ones(1), "FP32")],
                "outputs": [{"name": "OUTPUT__0", "parameters": {"classification": 2}}],
            },
            "the classification extension is not supported at body.outputs[0].parameters.classification",
        ),
        (
            {
                "inputs": [tensor_input("x", torch.ones(1), "FP32")],
                "parameters": {"classification": 2},
            },
            "the classification extension is not supported at body.parameters.classification",
        ),
        (
            {"inputs": [{"name": "x", "shape": [0, 2**63 - 1, 2**63 - 1], "datatype": "FP32", "data": []}]},
            "shape [0, 9223372036854775807, 9223372036854775807] is too large: its dimensions multiply past"
            " 576460752303423487 elements at body.inputs[0].shape",
        ),
        (
            {"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 20000000000000000000]}]},
            "expected an integer in [-9223372036854775808, 9223372036854775807] for int64,"
            " found 20000000000000000000 at body.inputs[0].data[1]",
        ),
        (
            {
                "inputs": [tensor_input("x", torch.ones(1), "FP32")],
                "parameters": {"binary_data_output": 1},
            },
            "expected true or false, found 1 at body.parameters.binary_data_output",
        ),
        (
            {
                "inputs": [
                    {
                        **tensor_input("x", torch.ones(1), "FP32"),
                        "parameters": {"binary_data_size": 4},
                    }
                ]
            },
            "input 'x' has both \"data\" and parameters.binary_data_size at body.inputs[0]",
        ),
    ],
)
def test_malformed_requests(client, request_doc, message):
    assert_v2_error(infer(client, "tiny", request_doc), 400, message)


def binary_x(size: int, shape=(2,), datatype="FP32") -> dict:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": list(shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": size},
            }
        ]
    }


@pytest.mark.parametrize(
    ("request_doc", "binary", "headers", "message"),
    [
        (
            binary_x(8),
            b"\0" * 4,
            {},
            "binary_data_size of input 'x' is 8 bytes, but only 4 bytes of binary data remain in the body",
        ),
        (
            binary_x(4),
            b"\0" * 4,
            {},
            "binary_data_size of input 'x' is 4 bytes, but shape [2] of FP32 needs 8 bytes",
        ),
        (
            binary_x(8),
            b"\0" * 12,
            {},
            "the body has 4 byte(s) of binary data after the inputs' binary_data_size bytes",
        ),
        (
            binary_x(8),
            b"\0" * 8,
            {HEADER: "60000"},
            "Inference-Header-Content-Length is 60000, past the end of the 108-byte body",
        ),
        (
            binary_x(8),
            b"\0" * 8,
            {HEADER: "ten"},
            "Inference-Header-Content-Length must be a non-negative integer, got 'ten'",
        ),
        (
            binary_x(8),
            b"\0" * 8,
            {HEADER: "10"},
            "request JSON is not valid: The JSON document has an improper structure: missing or superfluous commas, braces, missing keys, etc.",
        ),
        (
            binary_x(8),
            b"\0" * 8,
            {HEADER: "99999999999999999999"},
            "Inference-Header-Content-Length is 99999999999999999999, past the end of any body this server"
            " accepts (at most 65536 bytes)",
        ),
        (
            binary_x(4, (4,), "BOOL"),
            b"\x01\x00\x02\xff",
            {},
            "BOOL data of input 'x' holds byte 2 at offset 2 of its binary data; each BOOL element must be"
            " the byte 0 or 1",
        ),
        (
            binary_x(0, (0, 2**63 - 1, 2**63 - 1)),
            b"",
            {},
            "shape [0, 9223372036854775807, 9223372036854775807] is too large: its dimensions multiply past"
            " 576460752303423487 elements at body.inputs[0].shape",
        ),
        (
            binary_x(6, (2,), "BYTES"),
            serialize_bytes([b"a"]) + b"\0",
            {},
            "BYTES data of input 'x' ends inside the length prefix of element 1",
        ),
        (
            binary_x(5, (2,), "BYTES"),
            serialize_bytes([b"a"]),
            {},
            "BYTES data of input 'x' holds 1 element(s), but its shape needs 2",
        ),
        (
            binary_x(6, (1,), "BYTES"),
            struct.pack("<I", 9) + b"ab",
            {},
            "BYTES data of input 'x': element 0 declares 9 bytes, but only 2 remain",
        ),
    ],
)
def test_malformed_binary_framing(client, request_doc, binary, headers, message):
    assert_v2_error(infer(client, "tiny", request_doc, binary, headers=headers), 400, message)


def test_http_level_errors_use_the_v2_envelope(client):
    assert_v2_error(
        client.simulate_get("/v2/models/tiny/infer"),
        405,
        "/v2/models/tiny/infer answers POST only",
    )
    assert client.simulate_get("/v2/models/tiny/infer").headers["allow"] == "POST"
    assert_v2_error(client.simulate_post("/v2/models/tiny"), 405, "/v2/models/tiny answers GET and HEAD only")
    assert_v2_error(client.simulate_get("/v2/health/nope"), 404, "GET /v2/health/nope: Not Found")
    big = {"inputs": [tensor_input("x", torch.zeros(20000), "FP32")]}
    assert_v2_error(
        infer(client, "tiny", big),
        413,
        f"body of {len(json.dumps(big))} bytes exceeds the limit of 65536 bytes",
    )
    gzip = infer(client, "tiny", binary_x(8), b"\0" * 8, headers={"Content-Encoding": "gzip"})
    assert_v2_error(gzip, 415, "Content-Encoding gzip is not supported; send the body uncompressed")
    complex_out = infer(client, "complex", {"inputs": [tensor_input("x", torch.ones(1), "FP32")]})
    assert_v2_error(
        complex_out,
        500,
        "output 'OUTPUT__0' has dtype ComplexFloat, which V2 cannot express",
    )


def test_failed_requests_leave_the_cache_and_later_answers_alone(client):
    good = {"inputs": [tensor_input("x", torch.tensor([1.0]), "FP32")]}
    assert infer(client, "tiny", good).status_code == 200
    before = client.simulate_get("/cache").json
    for bad in (
        {"inputs": [{"name": "x"}]},
        {"inputs": [tensor_input("y", torch.ones(1), "FP32")]},
        {"inputs": 3},
    ):
        assert infer(client, "tiny", bad).status_code == 400
    after = client.simulate_get("/cache").json
    assert after["models"] == before["models"] and after["stats"]["loads"] == before["stats"]["loads"]
    assert infer(client, "tiny", good).json["outputs"][0]["data"] == [3]


def test_the_documented_examples(tmp_path):
    # docs/v2.md and the README call these models; keep their answers true.
    example_script("create_v2_models").main(str(tmp_path))
    client = falcon.testing.TestClient(create_app(Config(model_root=tmp_path)))
    request = {
        "id": "42",
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "factor", "shape": [1], "datatype": "FP64", "data": [0.5]},
        ],
    }
    assert infer(client, "scale", request).json == {
        "model_name": "scale",
        "model_version": "1",
        "id": "42",
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 1, 1.5, 2]}],
    }
    names = {"inputs": [{"name": "names", "shape": [2], "datatype": "BYTES", "data": ["Ada", "Alan"]}]}
    assert infer(client, "greeter", names).json["outputs"][0]["data"] == ["Hello, Ada!", "Hello, Alan!"]


def test_big_integers_and_a_byte_order_mark_are_read(client):
    body = (
        b'\xef\xbb\xbf{"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [20000000000000000000, 1]}]}'
    )
    result = client.simulate_post("/v2/models/echo/infer", body=body)
    assert result.json["outputs"][0]["data"] == [2e19, 1]


@pytest.mark.parametrize("model", ["nested_lists", "word_grid"])
def test_a_list_of_lists_is_one_output_v2_cannot_express(client, model):
    x = tensor_input("x", torch.ones(2), "FP32")
    message = "List[List[int]]" if model == "nested_lists" else "List[List[str]]"
    assert_v2_error(
        infer(client, model, {"inputs": [x]}),
        500,
        f"output 'OUTPUT__0' is a {message}, which V2 cannot express as a tensor",
    )
    assert client.simulate_get(f"/v2/models/{model}").json["outputs"] == []


def test_a_tuple_holding_a_list_of_tensors(client):
    x = tensor_input("x", torch.tensor([1.0, 2.0]), "FP32")
    # Metadata lists no outputs rather than a partial list with a gap.
    assert client.simulate_get("/v2/models/tuple_with_list").json["outputs"] == []
    assert_v2_error(
        infer(client, "tuple_with_list", {"inputs": [x]}),
        500,
        "output 'OUTPUT__0' is a List[Tensor], which V2 cannot express as a tensor",
    )
    chosen = infer(client, "tuple_with_list", {"inputs": [x], "outputs": [{"name": "OUTPUT__1"}]})
    assert chosen.json["outputs"][0]["data"] == [2, 4]


def test_head_answers_wherever_get_does(client):
    for path in ["/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/tiny", "/v2/models/tiny/ready"]:
        got, head = client.simulate_get(path), client.simulate_head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-length"] == str(len(got.content))


def test_repository_and_statistics_refusals(model_root):
    client = falcon.testing.TestClient(create_app(Config(model_root=model_root)))
    missing = client.simulate_post("/v2/repository/models/nope/load")
    assert (missing.status_code, missing.json) == (
        404,
        {"error": "no model file nope, nope.pt or nope.pt2 under the model root"},
    )
    assert client.simulate_get("/v2/repository/index").status_code == 405
    bad = client.simulate_post("/v2/repository/index", body=b"[1]")
    assert (bad.status_code, bad.json) == (400, {"error": "a repository request body must be empty or a JSON object"})
    assert client.simulate_get("/v2/models/nope/stats").status_code == 404
    unloaded = client.simulate_post("/v2/repository/models/tiny/unload")
    assert (unloaded.status_code, unloaded.json) == (200, {})
    off = falcon.testing.TestClient(create_app(Config(model_root=model_root, metrics=False)))
    refused = off.simulate_get("/v2/models/stats")
    assert (refused.status_code, refused.json) == (
        400,
        {"error": "statistics come from the metrics, which --metrics off turned off"},
    )
    assert off.simulate_get("/metrics").status_code == 404


def test_repository_load_and_unload_in_one_worker(model_root):
    app_client = falcon.testing.TestClient(create_app(Config(model_root=model_root)))
    assert app_client.simulate_post("/v2/repository/models/nested/triple/load").status_code == 200
    index = {e["name"]: e for e in app_client.simulate_post("/v2/repository/index").json}
    assert index["nested/triple"]["state"] == "READY"
    assert index["tiny"] == {
        "name": "tiny",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "not loaded; loads on its first request",
    }
    assert app_client.simulate_post("/v2/repository/models/nested/triple/unload").status_code == 200
    ready = app_client.simulate_post("/v2/repository/index", json={"ready": True}).json
    assert "nested/triple" not in {e["name"] for e in ready}


def test_the_index_says_why_a_load_failed_and_skips_hidden_folders(model_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for name in ["tiny.pt", "corrupt.pt"]:
        (root / name).write_bytes((model_root / name).read_bytes())
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "hidden.pt").write_bytes((model_root / "tiny.pt").read_bytes())
    (root / ".hidden.pt").write_bytes((model_root / "tiny.pt").read_bytes())
    app_client = falcon.testing.TestClient(create_app(Config(model_root=root)))
    assert app_client.simulate_post("/serve?servable_identifier=corrupt.pt", body=b"[]").status_code == 422
    index = {e["name"]: e for e in app_client.simulate_post("/v2/repository/index").json}
    assert set(index) == {"tiny", "corrupt"}
    assert index["corrupt"]["reason"].startswith(
        "its last load failed: corrupt.pt is not a loadable TorchScript module: "
    )
    assert index["tiny"]["reason"] == "not loaded; loads on its first request"
    # Statistics list the models that served or are loaded, without walking the root.
    assert (
        app_client.simulate_post(
            "/serve?servable_identifier=tiny.pt", body=b'[{"type":"tensor","value":[1.0]}]'
        ).status_code
        == 200
    )
    names = [entry["name"] for entry in app_client.simulate_get("/v2/models/stats").json["model_stats"]]
    assert names == ["corrupt", "tiny"]


def test_repository_names_are_the_names_that_find_the_files():
    from torch_serving.repository import model_name

    files = {"a.pt", "a.pt2", "b.pt2", "dir/c.pt"}
    assert [model_name(f, files) for f in sorted(files)] == ["a", "a.pt2", "b", "dir/c"]
