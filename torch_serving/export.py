"""Making ``.pt2`` files this server describes fully: exported, compiled by
AOTInductor, and carrying their inputs' names, dtypes and shapes."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["METADATA_KEY", "package"]

# The AOTInductor package metadata key the server reads (ext/package.h).
METADATA_KEY = "torch_serving"


def package(
    model: torch.nn.Module,
    example_args: Sequence[Any],
    dynamic_shapes: Any = None,
    path: str | Path = "model.pt2",
    *,
    inductor_configs: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``model``, compile it with AOTInductor and write a ``.pt2`` package.

    The package records, through AOTInductor's own metadata, the names of
    ``model.forward``'s arguments and of each input tensor, and every input's
    and output's dtype and shape (dynamic dimensions with their symbol and
    range), so that the server names V2 inputs after them, reports them in
    model metadata, and refuses inputs that break them before any compiled
    code runs.

    Args:
        model: the module to serve; it is put in eval mode.
        example_args: positional arguments of ``forward``: tensors, or
            tuples, lists and dicts of them.
        dynamic_shapes: as ``torch.export.export`` takes them. A dynamic
            dimension declared with ``min=1`` serves size 1 too, although
            export specializes sizes 0 and 1 while tracing.
        path: where the package goes.
        inductor_configs: more AOTInductor settings.

    Returns:
        The package's path.

    Raises:
        TypeError: an example argument holds something other than tensors.
    """
    model = model.eval()
    example_args = tuple(example_args)
    leaves = torch.utils._pytree.tree_leaves(example_args)
    if not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
        kinds = sorted({type(leaf).__name__ for leaf in leaves if not isinstance(leaf, torch.Tensor)})
        raise TypeError(
            f"example_args may hold only tensors (nested in tuples, lists and dicts), found {', '.join(kinds)}"
        )
    exported = torch.export.export(model, example_args, dynamic_shapes=dynamic_shapes)
    description = _describe(exported, _argument_names(model, len(example_args)))
    configs = {
        "aot_inductor.metadata": {METADATA_KEY: json.dumps(description)},
        # The package's own checks would refuse size 1 of a dimension that
        # export traced from 2 up; the server checks the declared range.
        "aot_inductor.check_lowerbound": False,
        **(inductor_configs or {}),
    }
    with torch.no_grad():
        written = torch._inductor.aoti_compile_and_package(exported, package_path=str(path), inductor_configs=configs)
    return Path(written)


def _argument_names(model: torch.nn.Module, count: int) -> list[str]:
    parameters = list(inspect.signature(model.forward).parameters)
    return parameters[:count] if len(parameters) >= count else [str(i) for i in range(count)]


def _describe(exported: torch.export.ExportedProgram, arguments: list[str]) -> dict[str, Any]:
    from torch.export.graph_signature import InputKind

    placeholders = {node.name: node for node in exported.graph.nodes if node.op == "placeholder"}
    inputs = [
        _tensor(spec.arg.name, placeholders[spec.arg.name].meta["val"], exported.range_constraints)
        for spec in exported.graph_signature.input_specs
        if spec.kind == InputKind.USER_INPUT
    ]
    output_node = next(node for node in exported.graph.nodes if node.op == "output")
    user_outputs = set(exported.graph_signature.user_outputs)
    outputs = [
        _tensor(None, value.meta["val"], exported.range_constraints)
        for value in output_node.args[0]
        if getattr(value, "name", None) in user_outputs
    ]
    torch_version = torch.__version__.split("+")[0]
    return {"torch": torch_version, "arguments": arguments, "inputs": inputs, "outputs": outputs}


def _tensor(name: str | None, value: torch.Tensor, ranges: Mapping[Any, Any]) -> dict[str, Any]:
    dims: list[Any] = []
    for size in value.shape:
        if isinstance(size, int):
            dims.append(size)
            continue
        expr = size.node.expr
        bounds = ranges.get(expr)
        upper = None if bounds is None or not bounds.upper.is_finite else int(bounds.upper)
        dims.append({"symbol": str(expr), "min": int(bounds.lower) if bounds is not None else 0, "max": upper})
    described: dict[str, Any] = {"dtype": str(value.dtype).removeprefix("torch."), "dims": dims}
    if name is not None:
        described["name"] = name
    return described
