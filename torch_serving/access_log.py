"""A cheaper gunicorn access log: one fixed-format line per request.

Gunicorn's stock access log builds a dict of every atom (all headers
included) for each request, which costs a sixth of a small request's time
(measured with py-spy under load, see docs/performance.md). This logger
formats only what it prints:
``127.0.0.1 "POST /serve?servable_identifier=m.pt HTTP/1.1" 200 355 1.2ms``.

When the access log is gunicorn's own handler alone (``-`` or a file, the
CLI's setting), the line is written to that handler's stream as the handler
itself would write it, without a ``logging.LogRecord``: building, filtering
and formatting the record cost most of what logging a line costs, which a
small request paid on every answer (docs/performance.md). Any other
arrangement (a ``logconfig``, syslog, a filter, records propagated) gets
the record as before.
"""

from __future__ import annotations

import logging

from gunicorn.glogging import Logger

__all__ = ["AccessLogger"]


class AccessLogger(Logger):
    """Gunicorn logger whose access lines are built directly."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        handlers = self.access_log.handlers
        self._plain_handler = handlers[0] if len(handlers) == 1 and _writes_bare_lines(handlers[0]) else None
        self._plain_formatter = None if self._plain_handler is None else self._plain_handler.formatter

    def _direct_handler(self) -> logging.StreamHandler | None:
        """The access log's handler when a line may be written straight to its stream, as it is now: the
        handler ``setup`` found writing bare lines, alone getting the records, and no filter or level
        between a line and it. Else None."""
        log = self.access_log
        handler = self._plain_handler
        if (
            handler is None
            or log.propagate
            or log.filters
            or log.handlers != [handler]
            or handler.filters
            or handler.formatter is not self._plain_formatter
            or handler.level > logging.INFO
            or not log.isEnabledFor(logging.INFO)
        ):
            return None
        return handler

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        query = f"?{req.query}" if req.query else ""
        # Gunicorn's own error answers set the status line only.
        status = getattr(resp, "status_code", None) or str(resp.status).split(" ", 1)[0]
        milliseconds = request_time.total_seconds() * 1000
        args = (
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
        handler = self._direct_handler()
        if handler is None or not _write(handler, _LINE % args):
            self.access_log.info(_LINE, *args)


_LINE = '%s "%s %s%s HTTP/%s.%s" %s %s %.1fms'


def _writes_bare_lines(handler: logging.Handler) -> bool:
    """Whether ``handler`` is the library's own stream or file handler (whose ``emit`` writes the
    formatted record and its terminator, then flushes) with a format that is the message alone, as
    gunicorn's ``%(message)s``."""
    if type(handler) not in (logging.StreamHandler, logging.FileHandler):
        return False
    probe = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 0, "%s %s", ("bare", "line"), None)
    return handler.format(probe) == "bare line"


def _write(handler: logging.StreamHandler, line: str) -> bool:
    """Write ``line`` to ``handler``'s stream as its ``emit`` would and return True; False when it cannot
    (a closed file handler, which opens its file again on ``emit``; a failed write, which the record's
    own path then reports as logging does)."""
    handler.acquire()  # as gunicorn's reopen_files does while it swaps the stream (USR1)
    try:
        stream = handler.stream
        if stream is None:
            return False
        stream.write(line + handler.terminator)
        stream.flush()
        return True
    except Exception:  # noqa: BLE001 - see above
        return False
    finally:
        handler.release()
