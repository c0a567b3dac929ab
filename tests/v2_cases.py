"""Open Inference Protocol cases that every transport (REST, gRPC) must treat alike, from the one
implementation behind both: every datatype's values, and the requests refused with the same status (as
HTTP and as gRPC, which maps it as Triton does) and the same message."""

from __future__ import annotations

import ml_dtypes
import numpy as np

# Every datatype, with values that probe its range.
ARRAYS = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 128, 254]], dtype=np.uint8),
    "INT8": np.array([[-128, 0, 127], [1, -1, 5]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767], [2, -3, 4]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [5, -6, 7]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [2**53 + 1, -8, 9]], dtype=np.int64),
    "FP16": np.array([[-65504, 0.1, 65504], [1.5, -2.25, 1e-3]], dtype=np.float16),
    "FP32": np.array([[-3.4e38, 0.1, 3.4e38], [19.269815, -2.5, 1e-30]], dtype=np.float32),
    "FP64": np.array([[-1.7e308, 0.1, 1.7e308], [5e-324, -2.5, 1 / 3]], dtype=np.float64),
    "BF16": np.array([[-3.0e38, 0.1, 3.0e38], [1.5, -2.25, 1e-3]], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([[b"", b"a", b"\xff\x00binary"], [b"spaces and \n", b"\xc3\xbc", b"z"]], dtype=np.object_),
}

ONE = np.ones(1, np.float32)

# (model, inputs as (name, array, datatype), HTTP status, gRPC status code, message; None where the message
# names the server's own path)
INFER_ERRORS = (
    ("nope", [("x", ONE, "FP32")], 404, "NOT_FOUND", "no model file nope, nope.pt or nope.pt2 under the model root"),
    (
        "pair",
        [("a", ONE, "FP32")],
        400,
        "INVALID_ARGUMENT",
        "missing input for argument 'b' (position 1) of forward, which expects Tensor; signature: "
        "forward(a: Tensor, b: Tensor, scale: float = 1.0) -> Tuple[Tensor, Tensor]",
    ),
    (
        "tiny",
        [("x", ONE, "FP32"), ("y", ONE, "FP32")],
        400,
        "INVALID_ARGUMENT",
        "input 'y' matches no argument of forward; its arguments are x (or INPUT__0 to INPUT__0 by position); "
        "signature: forward(x: Tensor) -> Tensor",
    ),
    (
        "raising",
        [("x", -ONE, "FP32")],
        400,
        "INVALID_ARGUMENT",
        "forward raised: builtins.ValueError: inputs must not sum to a negative number",
    ),
    (
        "scalars",
        [("count", ONE, "FP32")],
        400,
        "INVALID_ARGUMENT",
        "input 'count' (FP32, shape [1]) cannot be argument 'count' of forward, which expects int: "
        "give it as an integer datatype",
    ),
    ("corrupt", [("x", ONE, "FP32")], 422, "FAILED_PRECONDITION", None),
)
