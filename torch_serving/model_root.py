"""Confinement of servable identifiers to the model root."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from torch_serving._native import ModelNotFoundError

__all__ = ["MODEL_SUFFIXES", "IdentifierError", "glob_models", "resolve_model", "servable_files"]

# The model files served: TorchScript, then AOTInductor packages (the order
# in which a V2 name without its suffix finds them).
MODEL_SUFFIXES = (".pt", ".pt2")

# What a failed look-up says when nothing is there to serve.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP})


class IdentifierError(ValueError):
    """A servable identifier is malformed (empty, absolute, with ``..``)."""


def resolve_model(root: Path, identifier: str, label: str = "servable_identifier") -> str:
    """Return the path of the model file ``identifier`` names, relative to ``root``.

    The native core opens that path beneath the root again, refusing any
    symlink on the way, so a file swapped after this check is refused too.

    Args:
        root: the model root, already resolved.
        identifier: a path relative to ``root``, as the client sent it.
        label: what errors call the identifier.

    Returns:
        The symlink-free path of a regular file inside ``root``, relative to it.

    Raises:
        IdentifierError: the identifier is empty, absolute, holds a NUL or a
            ``..`` component.
        ModelNotFoundError: no regular file by that name lies inside the
            root. Files outside it get this same answer, so that no reply
            tells whether they exist.

    Any other failure to look the path up (permissions, exhausted memory) is
    left to the native open, which meets it again and classifies it, in one
    place, for every way a model file is opened (``ext/model_file.cpp``).
    """
    # Plain string operations: this runs on every request.
    if not identifier:
        raise IdentifierError(f"{label} is empty")
    if "\0" in identifier:
        raise IdentifierError(f"{label} contains a NUL character")
    if identifier.startswith("/"):
        raise IdentifierError(f"{label} must be relative to the model root, got {identifier!r}")
    if ".." in identifier.split("/"):
        raise IdentifierError(f"{label} must not contain '..' components, got {identifier!r}")
    root_text = str(root).rstrip("/")
    parts = [part for part in identifier.split("/") if part not in ("", ".")]
    # Fast path, one lstat per component: no symlink on the way.
    path = root_text
    try:
        for part in parts:
            path += "/" + part
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                return _resolve_through_links(root_text, identifier)
    except OSError as error:
        if error.errno in _ABSENT:
            raise _not_found(identifier) from None
        return "/".join(parts)
    if not parts or not stat.S_ISREG(mode):
        raise _not_found(identifier)
    return "/".join(parts)


def glob_models(root: Path, pattern: str) -> tuple[list[str], dict[str, str]]:
    """Return the regular files under ``root`` that the glob ``pattern`` matches, as
    ``resolve_model`` resolves them (sorted), and those it refuses, with why.

    Raises:
        ValueError: ``pattern`` is not a glob.
    """
    found, refused = [], {}
    for path in sorted(root.glob(pattern)):
        if not path.is_file():
            continue
        try:
            found.append(resolve_model(root, str(path.relative_to(root))))
        except (IdentifierError, ModelNotFoundError, ValueError) as error:
            refused[str(path)] = str(error)  # e.g. a symlink out of the root
    return found, refused


def servable_files(root: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Return the model files under ``root`` with one of ``suffixes``, as ``resolve_model`` resolves them
    (sorted). Hidden files and folders (a virtual environment, ``.git``) are skipped, and symlinked
    folders are not entered."""
    found = []
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if name.endswith(suffixes) and not name.startswith("."):
                relative = os.path.relpath(os.path.join(folder, name), root)
                try:
                    found.append(resolve_model(root, relative))
                except (IdentifierError, ModelNotFoundError):
                    pass  # e.g. a symlink out of the root, or not a regular file
    return sorted(found)


def _resolve_through_links(root_text: str, identifier: str) -> str:
    try:
        resolved = os.path.realpath(os.path.join(root_text, identifier), strict=True)
        is_regular = stat.S_ISREG(os.stat(resolved).st_mode)
    except (OSError, RuntimeError, ValueError):
        is_regular = False
    if not is_regular or not resolved.startswith(root_text + "/"):
        raise _not_found(identifier)
    return resolved[len(root_text) + 1 :]


def _not_found(identifier: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"no model file {identifier} under the model root")
