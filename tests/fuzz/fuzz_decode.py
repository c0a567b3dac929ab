"""Fuzz the native request decoder through its Python binding.

Half the inputs are raw bytes (mutated from the seed corpus); the other half
are typed documents generated from the input, valid by construction, whose
decoding must succeed and equal the plain-Python reference codec's. The
native code is not coverage-instrumented (gcc), hence the generator.
Any outcome but a decoded list or a DecodeError (for raw bytes) is a crash.

Run: python tests/fuzz/fuzz_decode.py tests/fuzz/corpus -max_total_time=60
"""

import json
import math
import sys

import atheris

with atheris.instrument_imports():
    import torch

    from tests import reference_codec
    from torch_serving import DecodeError, decode

DTYPES = list(reference_codec.DTYPES)
RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
FLOAT_LIMITS = {"float16": 65504.0, "bfloat16": 3.0e38, "float32": 3.0e38, "float64": 1.7e308}


def element(fdp: atheris.FuzzedDataProvider, dtype: str):
    if dtype == "bool":
        return fdp.PickValueInList([True, False, 0, 1])
    if dtype in RANGES:
        low, high = RANGES[dtype]
        return fdp.ConsumeIntInRange(low, high)
    special = fdp.ConsumeIntInRange(0, 9)
    if special == 0:
        return fdp.PickValueInList(["NaN", "Infinity", "-Infinity"])
    value = fdp.ConsumeRegularFloat()
    limit = FLOAT_LIMITS[dtype]
    return value if math.isfinite(value) and abs(value) < limit / 2 else 0.5


def tensor(fdp: atheris.FuzzedDataProvider) -> dict:
    dtype = fdp.PickValueInList(DTYPES)
    shape = [fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    count = math.prod(shape)
    flat = [element(fdp, dtype) for _ in range(count)]
    obj = {"type": "tensor", "data_type": dtype}
    if fdp.ConsumeBool() or not shape:
        obj.update(shape=shape, value=flat)
    else:
        nested = torch.empty(shape) if count == 0 else None
        obj["value"] = nested.tolist() if nested is not None else _nest(flat, shape)
    return obj


def _nest(flat: list, shape: list[int]):
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0]
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def typed(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> dict:
    kind = fdp.ConsumeIntInRange(0, 6 if depth < 2 else 4)
    if kind == 0:
        return tensor(fdp)
    if kind == 1:
        return {"type": "tensor_list", "value": [tensor(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]}
    if kind == 2:
        return {"type": "tensor_dict", "value": {f"k{i}": tensor(fdp) for i in range(fdp.ConsumeIntInRange(0, 3))}}
    if kind == 3:
        return {"type": "scalar", "value": fdp.PickValueInList([fdp.ConsumeInt(8), fdp.ConsumeBool(), 0.25])}
    if kind == 4:
        return {"type": "string", "value": fdp.ConsumeUnicodeNoSurrogates(12)}
    if kind == 5:
        return {
            "type": "list",
            "value": [{"type": "string", "value": str(i)} for i in range(fdp.ConsumeIntInRange(0, 3))],
        }
    return {"type": "none"}


def same(actual, expected) -> bool:
    if isinstance(expected, torch.Tensor):
        try:
            torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
        except (AssertionError, TypeError):
            return False
        return True
    if isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, dict):
        return list(actual) == list(expected) and all(same(actual[k], expected[k]) for k in expected)
    return actual == expected


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        try:
            args = decode(fdp.ConsumeBytes(fdp.remaining_bytes()))
        except DecodeError:
            return
        if not isinstance(args, list):
            raise AssertionError(f"decode returned {type(args).__name__}, not a list")
        return
    body = json.dumps([typed(fdp) for _ in range(fdp.ConsumeIntInRange(1, 4))]).encode()
    if not same(decode(body), reference_codec.decode(body)):
        raise AssertionError(f"native and reference decoders differ on {body[:500]!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
