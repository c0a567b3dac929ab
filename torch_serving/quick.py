"""Which requests a worker's event loop may answer itself, without a thread.

Handing a small request to a thread, and its connection back to the event
loop afterwards, costs more CPU than the request's own decoding, forward and
encoding (docs/performance.md). A request that is all in the socket and
whose work is known to be short is therefore answered where it was found.
Anything that could take long (a model not loaded, or whose file changed, a
slow forward, a large body, a probable reload) takes a thread as before, so
that the loop keeps serving everybody else.
"""

from __future__ import annotations

import os
from pathlib import Path

from falcon.util.uri import parse_query_string

from torch_serving._native import Server
from torch_serving.model_root import MODEL_SUFFIXES

__all__ = ["QuickRequests"]

_V2_MODELS = "/v2/models/"
_INFER = "/infer"


class QuickRequests:
    """Says whether a request can be answered at once (see the module's docstring).

    Args:
        server: the worker's native pipeline, which knows its models.
        root: the model root, already resolved.
    """

    def __init__(self, server: Server, root: Path) -> None:
        self._server = server
        self._root = str(root)

    def __call__(self, method: str, target: str, body_size: int) -> bool:
        """Whether the request ``method target`` with a body of ``body_size`` bytes is quick.

        Names are looked up as the client wrote them: one that is not already
        the model file's own path (a symlink, ``./`` in it, percent-encoding)
        is never quick, and takes a thread, whose answer is the same.
        """
        if method != "POST":
            return False
        path, _, query = target.partition("?")
        if path == "/serve":
            params = parse_query_string(query, keep_blank=True)
            identifier = params.get("servable_identifier")
            if not isinstance(identifier, str) or "invalidation_prob" in params:
                return False
            return self._server.can_answer_at_once(identifier, body_size)
        if path.startswith(_V2_MODELS) and path.endswith(_INFER):
            name = path[len(_V2_MODELS) : -len(_INFER)]
            if not name or "/" in name or "%" in name or "\0" in name:
                return False
            return self._server.can_answer_at_once(self._v2_file(name), body_size)
        return False

    def _v2_file(self, name: str) -> str:
        # As the V2 routes look names up: the name itself, else with a suffix.
        if name.endswith(MODEL_SUFFIXES) or os.path.lexists(os.path.join(self._root, name)):
            return name
        for suffix in MODEL_SUFFIXES:
            if os.path.lexists(os.path.join(self._root, name + suffix)):
                return name + suffix
        return name
