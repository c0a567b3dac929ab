"""Inference requests that every transport refuses alike: the same status (as HTTP and as gRPC, which
maps it as Triton does) and the same message, from one implementation behind both."""

from __future__ import annotations

import numpy as np

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
