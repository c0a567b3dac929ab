"""The error envelope: the one shape every error answer takes.

An error answer of the /serve API is
``{"code": N, "message": "Client Error"|"Server Error", "description": SHORT, "detail": LONGER}``
with ``N`` equal to the HTTP status. ``description`` is a stable phrase a
client can switch on; ``detail`` says exactly what was wrong. Under ``/v2``
and KServe's ``/v1`` the same status answers with their ``{"error": DETAIL}``.

This module loads no torch, so that the gunicorn worker class can answer
gunicorn's own refusals with it.
"""

from __future__ import annotations

import json

__all__ = ["BUSY", "RETRY_AFTER", "busy_detail", "error_body", "error_document"]

# The header of every 503: how many seconds the client should wait.
RETRY_AFTER = {"Retry-After": "1"}
# The description of the 503 of a worker that holds as many requests as it may.
BUSY = "Server busy"


def busy_detail(limit: int) -> str:
    """The detail of that 503, whether the worker's event loop refuses the request or its native calls
    (still held by abandoned work) are at the same limit."""
    return f"this worker holds {limit} requests, its limit (--threads + --queue-size); retry later"


# Where errors take the Open Inference Protocol's and KServe V1's form.
_PROTOCOL_PREFIXES = ("/v1", "/v2")


def error_body(status: int, description: str, detail: str) -> bytes:
    """Return the /serve JSON envelope of an error answer."""
    message = "Client Error" if status < 500 else "Server Error"
    envelope = {
        "code": status,
        "message": message,
        "description": description,
        "detail": detail,
    }
    return json.dumps(envelope).encode()


def error_document(path: str, status: int, description: str, detail: str) -> bytes:
    """Return the error answer for a request to ``path``: ``{"error": detail}`` under /v1 and /v2, the
    envelope elsewhere."""
    if any(path == prefix or path.startswith(prefix + "/") for prefix in _PROTOCOL_PREFIXES):
        return json.dumps({"error": detail}).encode()
    return error_body(status, description, detail)
