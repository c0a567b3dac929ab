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

from falcon.util.uri import parse_query_string

from torch_serving._native import Server

__all__ = ["EventLoopRequests"]

_V2_MODELS = "/v2/models/"
_INFER = "/infer"
_VERSIONS = "/versions/"


class EventLoopRequests:
    """Says whether a worker's event loop may answer a request itself (see the module's docstring).

    Args:
        server: the worker's native pipeline, which knows its models.
    """

    def __init__(self, server: Server) -> None:
        self._server = server

    def __call__(self, method: str, target: str, body_size: int) -> str | None:
        """The model file (relative to the root) of the request ``method target`` with a body of
        ``body_size`` bytes when the event loop may answer it, else None. The application serves that
        file without looking it up again (``torch_serving.environ.ON_EVENT_LOOP``).

        A V2 name is looked up as the V2 routes look it up, natively, where
        the verdict is made (``Server.event_loop_model_named``). A ``/serve``
        identifier is taken as written, without the ``lstat`` that resolving
        it costs: one that is not already the model file's own path (a
        symlink, ``./`` in it) is never answered in the loop, and takes a
        thread, whose answer is the same. So the file found is the one the
        application would find.
        """
        if method != "POST":
            return None
        path, _, query = target.partition("?")
        if path == "/serve":
            params = parse_query_string(query, keep_blank=True)
            identifier = params.get("servable_identifier")
            if not isinstance(identifier, str) or "invalidation_prob" in params:
                return None
            return identifier if self._server.can_answer_in_event_loop(identifier, body_size) else None
        # Falcon decodes the path before the V2 routes read the name: an encoded one takes a thread, and
        # so does a versioned one, whose name the routes read differently.
        if path.startswith(_V2_MODELS) and path.endswith(_INFER) and "%" not in path and _VERSIONS not in path:
            return self._server.event_loop_model_named(path[len(_V2_MODELS) : -len(_INFER)], body_size)
        return None
