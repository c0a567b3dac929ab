"""Hostile request bodies at the size limit: many names, many keys, deep
nesting, long shape lists, many tiny tensors. Each must cost time linear in
its size. Used by tests/integration/test_adversarial.py and by
``python -m benchmarks.adversarial``, which prints how long each takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Adversary:
    """One hostile request and the answer it must get."""

    name: str
    path: str  # with the query
    build: Callable[[int], bytes]  # body of about the given size
    status: int
    detail: str  # the start of the answer's detail (V2: its error)


def _repeat(head: bytes, item: bytes | Callable[[int], bytes], tail: bytes, size: int) -> bytes:
    """``head`` + items joined by commas + ``tail``, padded with spaces to ``size`` bytes.

    ``item`` is one constant item, or makes item ``k`` (for distinct names).
    """
    longest = (len(item) if isinstance(item, bytes) else len(item(10**7))) + 1  # never ten million items
    count = (size - len(head) - len(tail)) // longest
    if isinstance(item, bytes):
        items = (item + b",") * (count - 1) + item
    else:
        items = b",".join(item(k) for k in range(count))
    body = head + items + tail
    return body + b" " * (size - len(body))


def _v2_many_outputs(size: int) -> bytes:
    # Distinct names all the way, and the first one again at the very end.
    head = b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":['
    return _repeat(head, lambda k: b'{"name":"o%d"}' % k, b',{"name":"o0"}]}', size)


def _v2_many_inputs(size: int) -> bytes:
    head = b'{"inputs":['
    item = b'{"name":"i%d","shape":[1],"datatype":"FP32","data":[1]}'
    return _repeat(head, lambda k: item % k, b"]}", size)


def _many_keys(size: int) -> bytes:
    head = b'{"type":"tensor_dict","value":{'
    return _repeat(head, lambda k: b'"k%d":{"type":"tensor","value":[1]}' % k, b"}}", size)


def _many_tiny_tensors(size: int) -> bytes:
    head = b'{"type":"tensor_list","value":['
    return _repeat(head, b'{"type":"tensor","value":[1]}', b"]}", size)


def _long_shape(size: int) -> bytes:
    return _repeat(b'{"type":"tensor","value":[],"shape":[', b"1", b"]}", size)


def _deep_lists(size: int) -> bytes:
    # As deep as the parser allows (1,024 levels), repeated to the size.
    depth = 300
    nested = b'{"type":"list","value":[' * depth + b'{"type":"scalar","value":1}' + b"]}" * depth
    return _repeat(b"[", nested, b"]", size)


def _deeper_than_allowed(size: int) -> bytes:
    half = size // 2
    return b"[" * half + b"]" * half


ADVERSARIES = [
    Adversary(
        "v2 many output names",
        "/v2/models/tiny/infer",
        _v2_many_outputs,
        400,
        'duplicate output name "o0" at body.outputs[',
    ),
    Adversary(
        "v2 many inputs",
        "/v2/models/tiny/infer",
        _v2_many_inputs,
        400,
        "input 'i0' matches no argument of forward",
    ),
    Adversary(
        "many dict keys",
        "/serve?servable_identifier=tiny.pt",
        _many_keys,
        400,
        "argument 'x' (position 0) of forward expects Tensor, received Dict[str, Tensor]",
    ),
    Adversary(
        "many tiny tensors",
        "/serve?servable_identifier=tiny.pt",
        _many_tiny_tensors,
        400,
        "argument 'x' (position 0) of forward expects Tensor, received List[Tensor]",
    ),
    Adversary(
        "long shape list",
        "/serve?servable_identifier=tiny.pt",
        _long_shape,
        400,
        "expected at most 64 dimensions at body.shape",
    ),
    Adversary(
        "deep nesting, repeated",
        "/serve?servable_identifier=tiny.pt",
        _deep_lists,
        400,
        "forward takes at most 1 argument(s)",
    ),
    Adversary(
        "deeper than the parser allows",
        "/serve?servable_identifier=tiny.pt",
        _deeper_than_allowed,
        400,
        "request body is not valid JSON: ",
    ),
]
