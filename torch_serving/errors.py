"""The one place where errors become HTTP answers.

An error answer of the /serve API has the envelope
``{"code": N, "message": "Client Error"|"Server Error", "description": SHORT, "detail": LONGER}``
with ``N`` equal to the HTTP status. ``description`` is a stable phrase a
client can switch on; ``detail`` says exactly what was wrong. Under ``/v2``
the same status answers with the Open Inference Protocol's ``{"error": DETAIL}``.
"""

from __future__ import annotations

import http
import json
import logging

import falcon

from torch_serving._native import (
    DecodeError,
    EncodeError,
    ExecutionError,
    ModelLoadError,
    ModelNotFoundError,
    SignatureError,
    UnknownOutputError,
)
from torch_serving.model_root import IdentifierError

__all__ = ["RequestError", "error_body", "install_error_handlers"]

_V2_PREFIX = "/v2"

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


def error_body(status: int, description: str, detail: str) -> bytes:
    """Return the JSON envelope of an error answer."""
    message = "Client Error" if status < 500 else "Server Error"
    envelope = {
        "code": status,
        "message": message,
        "description": description,
        "detail": detail,
    }
    return json.dumps(envelope).encode()


def _answer(
    req: falcon.Request,
    resp: falcon.Response,
    status: int,
    description: str,
    detail: str,
) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    if req.path == _V2_PREFIX or req.path.startswith(_V2_PREFIX + "/"):
        resp.data = json.dumps({"error": detail}).encode()
    else:
        resp.data = error_body(status, description, detail)


def _on_request_error(req, resp, error: RequestError, params) -> None:
    _answer(req, resp, error.status, error.description, error.detail)
    for name, value in error.headers.items():
        resp.set_header(name, value)


def _on_native_error(req, resp, error: Exception, params) -> None:
    status, description = next(v for cls, v in _STATUS.items() if isinstance(error, cls))
    _answer(req, resp, status, description, str(error))


def _on_http_error(req, resp, error: falcon.HTTPError, params) -> None:
    status = int(error.status_code)
    description = http.HTTPStatus(status).phrase
    detail = error.description or f"{req.method} {req.path}: {description}"
    _answer(req, resp, status, description, detail)
    for name, value in (error.headers or {}).items():
        resp.set_header(name, value)


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
    app.add_error_handler(RequestError, _on_request_error)
    app.add_error_handler(tuple(_STATUS), _on_native_error)
