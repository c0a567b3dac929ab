"""A cheaper gunicorn access log: one fixed-format line per request.

Gunicorn's stock access log builds a dict of every atom (all headers
included) for each request, which costs a sixth of a small request's time
(measured with py-spy under load, see docs/performance.md). This logger
formats only what it prints:
``127.0.0.1 "POST /serve?servable_identifier=m.pt HTTP/1.1" 200 355 1.2ms``.
"""

from __future__ import annotations

from gunicorn.glogging import Logger

__all__ = ["AccessLogger"]


class AccessLogger(Logger):
    """Gunicorn logger whose access lines are built directly."""

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        query = f"?{req.query}" if req.query else ""
        # Gunicorn's own error answers set the status line only.
        status = getattr(resp, "status_code", None) or str(resp.status).split(" ", 1)[0]
        milliseconds = request_time.total_seconds() * 1000
        self.access_log.info(
            '%s "%s %s%s HTTP/%s.%s" %s %s %.1fms',
            environ.get("REMOTE_ADDR", "-"),
            req.method,
            req.path,
            query,
            req.version[0],
            req.version[1],
            status,
            getattr(resp, "sent", "-"),
            milliseconds,
        )
