"""The access log's line, for answers from the application, from the event
loop and gunicorn's own error answers."""

from __future__ import annotations

import logging
from datetime import timedelta

from gunicorn.config import Config as GunicornConfig
from gunicorn.http import wsgi

from torch_serving.access_log import AccessLogger
from torch_serving.plain_http import PlainReader

REQUEST = b"POST /serve?servable_identifier=m.pt HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"


def access_line(caplog, resp, req) -> str:
    cfg = GunicornConfig()
    cfg.set("accesslog", "-")
    logger = AccessLogger(cfg)
    logger.access_log.propagate = True
    with caplog.at_level(logging.INFO, logger="gunicorn.access"):
        logger.access(resp, req, {"REMOTE_ADDR": "10.0.0.1"}, timedelta(milliseconds=1.25))
    return caplog.records[-1].getMessage()


def plain_request():
    buffer = bytearray(REQUEST)
    return PlainReader(GunicornConfig()).read(buffer, len(buffer))


def test_an_answer_from_the_application_is_logged_with_its_status_and_size(caplog):
    request = plain_request()
    resp = wsgi.Response(request, None, GunicornConfig())
    resp.start_response("200 OK", [("Content-Length", "7")])
    resp.sent = 7
    assert access_line(caplog, resp, request) == (
        '10.0.0.1 "POST /serve?servable_identifier=m.pt HTTP/1.1" 200 7 1.2ms'
    )


def test_gunicorns_own_error_answer_is_logged_from_its_status_line(caplog):
    request = plain_request()
    resp = wsgi.Response(request, None, GunicornConfig())
    resp.status = "500 Internal Server Error"  # as gunicorn's handle_error sets it
    assert access_line(caplog, resp, request) == (
        '10.0.0.1 "POST /serve?servable_identifier=m.pt HTTP/1.1" 500 0 1.2ms'
    )


def file_logger(path) -> AccessLogger:
    cfg = GunicornConfig()
    cfg.set("accesslog", str(path))
    return AccessLogger(cfg)


def answered(status: str = "200 OK", size: int = 7):
    request = plain_request()
    resp = wsgi.Response(request, None, GunicornConfig())
    resp.start_response(status, [("Content-Length", str(size))])
    resp.sent = size
    return resp, request


def test_a_line_written_straight_to_gunicorns_file_handler_is_the_line_logging_writes(tmp_path, caplog):
    resp, request = answered()
    logger = file_logger(tmp_path / "access.log")
    logger.access(resp, request, {"REMOTE_ADDR": "10.0.0.1"}, timedelta(milliseconds=1.25))
    logger.access(resp, request, {}, timedelta(milliseconds=0.04))
    assert (tmp_path / "access.log").read_text() == (
        f'{access_line(caplog, resp, request)}\n- "POST /serve?servable_identifier=m.pt HTTP/1.1" 200 7 0.0ms\n'
    )


def test_lines_follow_the_file_gunicorn_reopens(tmp_path):
    resp, request = answered()
    logger = file_logger(tmp_path / "access.log")
    logger.access(resp, request, {}, timedelta(milliseconds=1))
    (tmp_path / "access.log").rename(tmp_path / "access.log.1")  # as logrotate does before USR1
    logger.reopen_files()
    logger.access(resp, request, {}, timedelta(milliseconds=2))
    assert (tmp_path / "access.log.1").read_text().endswith(" 200 7 1.0ms\n")
    assert (tmp_path / "access.log").read_text().endswith(" 200 7 2.0ms\n")


def test_a_filter_on_the_access_log_still_sees_every_record(tmp_path):
    resp, request = answered()
    logger = file_logger(tmp_path / "access.log")
    seen = []

    def drop(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return False

    logger.access_log.addFilter(drop)  # on logging's one "gunicorn.access" logger: removed below
    try:
        logger.access(resp, request, {}, timedelta(milliseconds=1))
    finally:
        logger.access_log.removeFilter(drop)
    assert seen == ['- "POST /serve?servable_identifier=m.pt HTTP/1.1" 200 7 1.0ms']
    assert (tmp_path / "access.log").read_text() == ""  # the filter dropped it


def test_a_closed_file_handler_gets_its_line_through_logging_which_opens_the_file_again(tmp_path):
    resp, request = answered()
    logger = file_logger(tmp_path / "access.log")
    logger.access_log.handlers[0].close()
    logger.access(resp, request, {}, timedelta(milliseconds=3))
    assert (tmp_path / "access.log").read_text().endswith(" 200 7 3.0ms\n")
