"""The native codec against the plain-Python reference, and every error rule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests import reference_codec as ref
from tests.conftest import body_of, tensor_json
from torch_serving import DecodeError, EncodeError, decode, encode

INT_RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
FLOAT_DTYPES = ["float16", "bfloat16", "float32", "float64"]


def assert_same(actual, expected):
    """Assert two decoded values are equal, dtypes and NaNs included."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor)
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key])
    else:
        assert type(actual) is type(expected)
        assert actual == expected or (math.isnan(actual) and math.isnan(expected))


def check_decode(body: bytes):
    decoded = decode(body)
    assert_same(decoded, ref.decode(body))
    return decoded


# --------------------------------------------------------------------------
# Decoding valid bodies.


@pytest.mark.parametrize("dtype", list(ref.DTYPES))
def test_every_dtype_flat_and_nested(dtype):
    source = (torch.arange(24).reshape(2, 3, 4) % 7).to(ref.DTYPES[dtype])
    flat = tensor_json(source, dtype)
    nested = {"type": "tensor", "value": source.tolist(), "data_type": dtype}
    decoded_flat, decoded_nested = check_decode(body_of(flat, nested))
    assert decoded_flat.dtype == ref.DTYPES[dtype]
    assert decoded_flat.shape == (2, 3, 4)
    assert torch.equal(decoded_flat, decoded_nested)


@pytest.mark.parametrize("dtype", list(INT_RANGES))
def test_integer_range_ends_are_exact(dtype):
    low, high = INT_RANGES[dtype]
    (tensor,) = check_decode(body_of({"type": "tensor", "value": [low, high], "data_type": dtype}))
    assert tensor.tolist() == [low, high]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float_specials_and_integers(dtype):
    body = body_of({"type": "tensor", "value": ["NaN", "Infinity", "-Infinity", 3, -0.0, 0.5], "data_type": dtype})
    (tensor,) = check_decode(body)
    assert math.isnan(tensor[0]) and tensor[1] == math.inf and tensor[2] == -math.inf
    assert tensor[3] == 3 and tensor[5] == 0.5


def test_float32_is_the_default_and_bool_accepts_numbers():
    default, flags = check_decode(
        body_of(
            {"type": "tensor", "value": [1, 2.5]}, {"type": "tensor", "value": [True, 0, 1, False], "data_type": "bool"}
        )
    )
    assert default.dtype == torch.float32
    assert flags.tolist() == [True, False, True, False]


def test_empty_and_zero_dim_tensors():
    empty, rows, scalar_shape = check_decode(
        body_of(
            {"type": "tensor", "shape": [0, 3], "value": []},
            {"type": "tensor", "value": [[], []]},
            {"type": "tensor", "shape": [], "value": [7], "data_type": "int64"},
        )
    )
    assert empty.shape == (0, 3) and rows.shape == (2, 0)
    assert scalar_shape.shape == () and scalar_shape.item() == 7


def test_single_object_is_one_argument():
    (tensor,) = check_decode(json.dumps({"type": "tensor", "value": [1, 2]}).encode())
    assert tensor.tolist() == [1.0, 2.0]


def test_containers_strings_scalars_and_none():
    body = body_of(
        {
            "type": "tensor_list",
            "value": [tensor_json(torch.ones(2)), tensor_json(torch.zeros(1, 2, dtype=torch.int32), "int32")],
        },
        {"type": "tensor_dict", "value": {"b": tensor_json(torch.ones(1)), "a": tensor_json(torch.ones(2), "float64")}},
        {"type": "string", "value": 'héllo "quoted" \n'},
        {"type": "scalar", "value": 9007199254740993},
        {"type": "scalar", "value": 1.5},
        {"type": "scalar", "value": 2.0},
        {"type": "scalar", "value": True},
        {"type": "scalar", "value": 3, "data_type": "float32"},
        {"type": "scalar", "value": 1, "data_type": "bool"},
        {"type": "scalar", "value": -5, "data_type": "int8"},
        {"type": "list", "value": [{"type": "scalar", "value": 1}, {"type": "scalar", "value": 2}]},
        {"type": "list", "value": [{"type": "scalar", "value": 1}, {"type": "scalar", "value": 2.5}]},
        {"type": "list", "value": [{"type": "string", "value": "a"}, {"type": "string", "value": "b"}]},
        {"type": "list", "value": []},
        {"type": "none"},
        {"type": "none", "value": None},
    )
    decoded = check_decode(body)
    assert decoded[3] == 9007199254740993  # exact beyond float precision
    assert decoded[5] == 2.0 and isinstance(decoded[5], float)
    assert list(decoded[1]) == ["b", "a"]


# --------------------------------------------------------------------------
# Decoding errors: exact messages with the JSON path.

DECODE_ERRORS = [
    (b"", "request body is empty"),
    (b"  \n", "request body is empty"),
    (b"\xff\xfe", "request body is not valid UTF-8"),
    (b"[1,", "request body is not valid JSON: "),
    (b'[{"type": "tensor", "value": [1], "value": [2]}]', 'duplicate key "value" at body[0]'),
    (b"42", "expected a typed object or an array of typed objects, found 42 at body"),
    (b"[1]", "expected an object, found 1 at body[0]"),
    (b'[{"value": [1]}]', 'missing key "type" at body[0]'),
    (b'[{"type": 3}]', "expected a string, found 3 at body[0].type"),
    (
        b'[{"type": "picture"}]',
        'unknown type "picture" (expected one of tensor, image, tensor_list, tensor_dict, scalar, string, list, none)'
        " at body[0].type",
    ),
    (b'[{"type": "image"}]', 'missing key "value" at body[0]'),
    (b'[{"type": "tensor"}]', 'missing key "value" at body[0]'),
    (
        b'[{"type": "tensor", "value": [1], "dtype": "int64"}]',
        'unknown key "dtype" (expected type, value, shape, data_type or mode) at body[0]',
    ),
    (b'[{"type": "string", "value": "a", "shape": [1]}]', 'key "shape" is not allowed for type string at body[0]'),
    (
        b'[{"type": "tensor", "value": [1], "data_type": "float8"}]',
        'unknown data_type "float8" (expected one of bool, uint8, int8, int16, int32, int64, float16, bfloat16, '
        "float32, float64) at body[0].data_type",
    ),
    (
        b'[{"type": "tensor", "value": [1, 300], "data_type": "uint8"}]',
        "expected an integer in [0, 255] for uint8, found 300 at body[0].value[1]",
    ),
    (
        b'[{"type": "tensor", "value": [-129], "data_type": "int8"}]',
        "expected an integer in [-128, 127] for int8, found -129 at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": [9223372036854775808], "data_type": "int64"}]',
        "expected an integer in [-9223372036854775808, 9223372036854775807] for int64, "
        "found 9223372036854775808 at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": [1.5], "data_type": "int64"}]',
        "expected an integer in [-9223372036854775808, 9223372036854775807] for int64, found 1.5 at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": [2.0], "data_type": "int32"}]',
        "expected an integer in [-2147483648, 2147483647] for int32, found 2.0 at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": [2], "data_type": "bool"}]',
        "expected true, false, 0 or 1 for bool, found 2 at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": ["nan"]}]',
        'expected a finite number within the range of float32 or "NaN", "Infinity", "-Infinity", '
        'found string "nan" at body[0].value[0]',
    ),
    (
        b'[{"type": "tensor", "value": [1e39]}]',
        'expected a finite number within the range of float32 or "NaN", "Infinity", "-Infinity", '
        "found 1e+39 at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": [70000], "data_type": "float16"}]',
        'expected a finite number within the range of float16 or "NaN", "Infinity", "-Infinity", '
        "found 70000 at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": [true]}]',
        'expected a finite number within the range of float32 or "NaN", "Infinity", "-Infinity", '
        "found true at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "value": [[1, 2], [3]]}]',
        "ragged nested value: expected an array of length 2, found an array of length 1 at body[0].value[1]",
    ),
    (
        b'[{"type": "tensor", "value": [[1, 2], 3]}]',
        "ragged nested value: expected an array of length 2, found 3 at body[0].value[1]",
    ),
    (
        b'[{"type": "tensor", "value": [1, [2]]}]',
        "ragged nested value: expected a number at depth 1 of shape [2], found an array at body[0].value[1]",
    ),
    (
        b'[{"type": "tensor", "shape": [2, 2], "value": [1, 2, 3]}]',
        "expected 4 values for shape [2, 2], found 3 at body[0].value",
    ),
    (
        b'[{"type": "tensor", "shape": [2], "value": [[1], [2]]}]',
        'expected a finite number within the range of float32 or "NaN", "Infinity", "-Infinity", '
        "found an array at body[0].value[0]",
    ),
    (
        b'[{"type": "tensor", "shape": [2, -1], "value": []}]',
        "expected a non-negative integer dimension, found -1 at body[0].shape[1]",
    ),
    (
        b'[{"type": "tensor", "shape": [2.5], "value": []}]',
        "expected a non-negative integer dimension, found 2.5 at body[0].shape[0]",
    ),
    (
        b'[{"type": "tensor", "shape": [4294967296, 4294967296], "value": []}]',
        "shape [4294967296, 4294967296] is too large: its dimensions multiply past 576460752303423487 elements"
        " at body[0].shape",
    ),
    (
        b'{"type":"tensor","value":[],"shape":[0,9223372036854775807,9223372036854775807]}',
        "shape [0, 9223372036854775807, 9223372036854775807] is too large: its dimensions multiply past"
        " 576460752303423487 elements at body.shape",
    ),
    (
        b'{"type":"tensor","value":[1, 20000000000000000000],"data_type":"int64"}',
        "expected an integer in [-9223372036854775808, 9223372036854775807] for int64, found 20000000000000000000"
        " at body.value[1]",
    ),
    (
        b'{"type":"tensor","value":[-9223372036854775809],"data_type":"int64"}',
        "expected an integer in [-9223372036854775808, 9223372036854775807] for int64, found -9223372036854775809"
        " at body.value[0]",
    ),
    (
        b'{"type":"scalar","value":-20000000000000000000,"data_type":"float16"}',
        'expected a finite number within the range of float16 or "NaN", "Infinity", "-Infinity",'
        " found -20000000000000000000 at body.value",
    ),
    (
        ('{"type":"tensor","value":["a' + "é" * 20 + '"]}').encode(),
        'expected a finite number within the range of float32 or "NaN", "Infinity", "-Infinity",'
        ' found string "a' + "é" * 19 + '..." at body.value[0]',
    ),
    (
        b'[{"type": "tensor", "shape": [100000000000], "value": [1]}]',
        "expected 100000000000 values for shape [100000000000], found 1 at body[0].value",
    ),
    (b'[{"type": "tensor", "shape": 3, "value": [1]}]', "expected an array, found 3 at body[0].shape"),
    (b'[{"type": "tensor", "shape": [1], "value": 1}]', "expected an array, found 1 at body[0].value"),
    (
        b'[{"type": "tensor_dict", "value": {"x": {"type": "tensor", "value": [1], "shape": [-1]}}}]',
        "expected a non-negative integer dimension, found -1 at body[0].value.x.shape[0]",
    ),
    (
        b'[{"type": "tensor_dict", "value": {"x": {"type": "tensor", "value": [1]}, "x": {"type": "tensor", "value": [1]}}}]',
        'duplicate key "x" at body[0].value',
    ),
    (
        b'[{"type": "tensor_list", "value": [{"type": "string", "value": "a"}]}]',
        'expected type "tensor" or "image", found string "string" at body[0].value[0].type',
    ),
    (b'[{"type": "tensor_list", "value": {}}]', "expected an array, found an object at body[0].value"),
    (b'[{"type": "string", "value": 3}]', "expected a string, found 3 at body[0].value"),
    (b'[{"type": "scalar", "value": "3"}]', 'expected a number or a bool, found string "3" at body[0].value'),
    (
        b'[{"type": "scalar", "value": 18446744073709551615}]',
        "expected an integer in the int64 range, found 18446744073709551615 at body[0].value",
    ),
    (
        b'[{"type": "scalar", "value": 300, "data_type": "uint8"}]',
        "expected an integer in [0, 255] for uint8, found 300 at body[0].value",
    ),
    (b'[{"type": "none", "value": 0}]', "expected null, found 0 at body[0].value"),
    (
        b'[{"type": "list", "value": [{"type": "scalar", "value": 1}, {"type": "string", "value": "a"}]}]',
        "expected a list element of type int like the first one, found str at body[0].value[1]",
    ),
    (
        b'[{"type": "list", "value": [{"type": "scalar", "value": 1}, {"type": "bogus"}]}]',
        'unknown type "bogus" (expected one of tensor, image, tensor_list, tensor_dict, scalar, string, list, none)'
        " at body[0].value[1].type",
    ),
]


@pytest.mark.parametrize(("body", "message"), DECODE_ERRORS, ids=[m[:40] for _, m in DECODE_ERRORS])
def test_decode_errors_name_path_and_expectation(body, message):
    with pytest.raises(DecodeError) as info:
        decode(body)
    if message.endswith(": "):
        assert str(info.value).startswith(message)
    else:
        assert str(info.value) == message


def test_decode_error_is_a_value_error():
    assert issubclass(DecodeError, ValueError)


def test_deep_nesting_is_refused_not_crashing():
    body = b"[" * 5000 + b"]" * 5000
    with pytest.raises(DecodeError, match="request body is not valid JSON"):
        decode(body)


def test_huge_nested_rank_is_refused():
    value = "[" * 70 + "1" + "]" * 70
    with pytest.raises(DecodeError, match="expected at most 64 dimensions at body.value"):
        decode(('{"type": "tensor", "value": %s}' % value).encode())


# --------------------------------------------------------------------------
# Encoding.


def check_encode(value):
    text = encode(value)
    assert json.loads(text) == json.loads(json.dumps(ref.encode(value)))
    return text


@pytest.mark.parametrize("dtype", list(ref.DTYPES))
def test_encode_every_dtype(dtype):
    values = torch.tensor([[0.0, 1.0, 2.5], [-3.25, 100.0, 7.0]]).to(ref.DTYPES[dtype])
    check_encode(values)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_encode_random_floats_shortest_round_trip(dtype):
    torch.manual_seed(1)
    values = (torch.randn(1000) * 1000).to(ref.DTYPES[dtype])
    text = check_encode(values)
    back = torch.tensor(json.loads(text)["value"], dtype=torch.float64).to(ref.DTYPES[dtype])
    assert torch.equal(back, values)


def test_float32_is_written_in_its_own_shortest_form():
    text = encode(torch.tensor([19.269815, 0.1, 1e-8, 3.0e38]))
    assert text == (b'{"type":"tensor","data_type":"float32","shape":[4],"value":[19.269815,0.1,1e-08,3e+38]}')


def test_encode_non_finite_and_extremes():
    check_encode(torch.tensor([math.nan, math.inf, -math.inf, -0.0], dtype=torch.float64))
    check_encode(torch.tensor([-(2**63), 2**63 - 1]))
    check_encode(torch.tensor([math.nan, math.inf, 65504.0, 6.1e-5], dtype=torch.float16))


def test_encode_strided_views_and_sparse_as_row_major():
    base = torch.arange(12.0).reshape(3, 4)
    check_encode(base.t())
    check_encode(base[:, ::2])
    check_encode(base.expand(2, 3, 4))
    sparse = torch.eye(3).to_sparse()
    assert json.loads(encode(sparse)) == ref.encode(torch.eye(3))


def test_encode_containers_and_scalars():
    value = {
        "out": ([torch.ones(1, 3), torch.zeros(2)], "Hello!", 30),
        "none": None,
        "flags": [True, False],
        "ratio": 0.1,
        "nan": math.nan,
        "nested": {"deep": [{"k": "v"}]},
    }
    check_encode(value)
    check_encode({1: "one", -2: "minus two"})
    check_encode('quote " backslash \\ newline \n tab \t bell \x07 unicode é')
    check_encode([])


def test_encode_refuses_complex_tensors_naming_where():
    with pytest.raises(EncodeError) as info:
        encode({"out": [torch.ones(1), torch.ones(1, dtype=torch.complex64)]})
    assert str(info.value) == "cannot encode a tensor of dtype ComplexFloat at result.value.out[1]"


def test_encode_refuses_unsupported_dict_keys():
    with pytest.raises(EncodeError) as info:
        encode({1.5: "x"})
    assert str(info.value) == "cannot encode a dict key of type float at result.value"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # JavaScript's JSON.stringify(2e19) and Go write integers beyond 64 bits.
        (b'{"type":"tensor","value":[20000000000000000000, -1]}', torch.tensor([2e19, -1.0])),
        (
            b'{"type":"tensor","value":[1e3, 123456789012345678901234],"data_type":"float64"}',
            torch.tensor([1e3, 123456789012345678901234.0], dtype=torch.float64),
        ),
        (
            b'{"type":"tensor","value":[18446744073709551615],"data_type":"float64"}',
            torch.tensor([18446744073709551615.0], dtype=torch.float64),
        ),
        # A UTF-8 byte-order mark before the JSON is skipped (RFC 8259).
        (b'\xef\xbb\xbf{"type":"tensor","value":[1, 2]}', torch.tensor([1.0, 2.0])),
    ],
)
def test_numbers_beyond_64_bits_and_a_byte_order_mark_are_read(body, expected):
    (decoded,) = decode(body)
    assert decoded.dtype == expected.dtype
    assert torch.equal(decoded, expected)


def test_a_big_integer_inside_a_string_is_left_alone():
    body = (
        b'[{"type":"string","value":"12345678901234567890123 \\" 99999999999999999999"},'
        b' {"type":"scalar","value":99999999999999999999}]'
    )
    assert decode(body) == ['12345678901234567890123 " 99999999999999999999', 1e20]
