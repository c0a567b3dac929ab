"""Confinement of servable identifiers to the model root."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from torch_serving._native import ModelNotFoundError

__all__ = ["IdentifierError", "resolve_model"]


class IdentifierError(ValueError):
    """A servable identifier is malformed (empty, absolute, with ``..``)."""


def resolve_model(root: Path, identifier: str) -> str:
    """Return the real path of the model file ``identifier`` names under ``root``.

    Args:
        root: the model root, already resolved.
        identifier: a path relative to ``root``, as the client sent it.

    Returns:
        The resolved path of a regular file inside ``root``.

    Raises:
        IdentifierError: the identifier is empty, absolute, holds a NUL or a
            ``..`` component.
        ModelNotFoundError: no regular file by that name lies inside the
            root. Files outside it get this same answer, so that no reply
            tells whether they exist.
    """
    if not identifier:
        raise IdentifierError("servable_identifier is empty")
    if "\0" in identifier:
        raise IdentifierError("servable_identifier contains a NUL character")
    relative = PurePosixPath(identifier)
    if relative.is_absolute():
        raise IdentifierError(f"servable_identifier must be relative to the model root, got {identifier!r}")
    if ".." in relative.parts:
        raise IdentifierError(f"servable_identifier must not contain '..' components, got {identifier!r}")
    not_found = ModelNotFoundError(f"no model file {identifier} under the model root")
    try:
        resolved = Path(os.path.realpath(root / relative, strict=True))
        is_regular = stat.S_ISREG(resolved.stat().st_mode)
    except (OSError, RuntimeError):
        raise not_found from None
    if not resolved.is_relative_to(root) or not is_regular:
        raise not_found
    return str(resolved)
