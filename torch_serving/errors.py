"""The one place where errors become answers: HTTP ones (in the shape of ``envelope``), and the
status, description and detail that the gRPC service turns into its status codes."""

from __future__ import annotations

import http
import logging

import falcon

from torch_serving._native import (
    DecodeError,
    EncodeError,
    ExecutionError,
    ModelAccessError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceError,
    SignatureError,
    UnknownOutputError,
)
from torch_serving.envelope import RETRY_AFTER, error_document
from torch_serving.model_root import IdentifierError

__all__ = ["RequestError", "answer_for", "install_error_handlers"]

logger = logging.getLogger("torch_serving")

# status and description for each error class the request path raises.
_STATUS = {
    IdentifierError: (400, "Invalid servable identifier"),
    DecodeError: (400, "Invalid request body"),
    SignatureError: (400, "Inputs do not match the model"),
    ExecutionError: (400, "Model failed on the inputs"),
    UnknownOutputError: (400, "Unknown output"),
    ModelNotFoundError: (404, "Model not found"),
    ModelLoadError: (422, "Model not loadable"),
    EncodeError: (500, "Unsupported model output"),
    ModelAccessError: (500, "Model not readable"),
    ResourceError: (503, "Server out of resources"),
}


class RequestError(Exception):
    """An HTTP-level problem with a request (a parameter, the body size).

    Args:
        status: the HTTP status code.
        description: the stable short phrase of the envelope.
        detail: what exactly was wrong.
        headers: extra response headers, e.g. ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        description: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.description = description
        self.detail = detail
        self.headers = headers or {}


def answer_for(error: Exception) -> RequestError | None:
    """What ``error`` answers (status, description, detail, headers) when the request path raises it on
    purpose; None for a bug."""
    if isinstance(error, RequestError):
        return error
    for cls, (status, description) in _STATUS.items():
        if isinstance(error, cls):
            return RequestError(status, description, str(error), RETRY_AFTER if status == 503 else None)
    return None


def _answer(
    req: falcon.Request,
    resp: falcon.Response,
    status: int,
    description: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = error_document(req.path, status, description, detail)
    for name, value in (headers or {}).items():
        resp.set_header(name, value)


def _on_known_error(req, resp, error: Exception, params) -> None:
    answer = answer_for(error)
    assert answer is not None, "registered for the known errors only"
    _answer(req, resp, answer.status, answer.description, answer.detail, answer.headers)


def _on_http_error(req, resp, error: falcon.HTTPError, params) -> None:
    status = int(error.status_code)
    description = http.HTTPStatus(status).phrase
    detail = error.description or f"{req.method} {req.path}: {description}"
    _answer(req, resp, status, description, detail, error.headers)


def _on_unexpected_error(req, resp, error: Exception, params) -> None:
    logger.exception("unhandled error while answering %s %s", req.method, req.path)
    _answer(
        req,
        resp,
        500,
        "Internal Server Error",
        "an unexpected error occurred; the server log has the details",
    )


def install_error_handlers(app: falcon.App) -> None:
    """Map every error the app can raise to its HTTP answer."""
    app.add_error_handler(Exception, _on_unexpected_error)
    app.add_error_handler(falcon.HTTPError, _on_http_error)
    app.add_error_handler((RequestError, *_STATUS), _on_known_error)
