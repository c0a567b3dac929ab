"""Plain requests, read and answered by the worker itself in its event loop
(``PlainReader``, ``PlainResponse``): which requests count as plain, that
their environ is the one gunicorn builds from its own reading of the same
bytes, and that their answers are the bytes gunicorn would write."""

from __future__ import annotations

import re

import pytest
from gunicorn import util
from gunicorn.config import Config as GunicornConfig
from gunicorn.http import wsgi
from gunicorn.http.errors import InvalidResponseHeader, InvalidResponseHeaderName
from gunicorn.http.parser import RequestParser

from torch_serving.plain_http import HttpDate, PlainReader, PlainResponse

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 8000)
PLAIN = b"POST /serve?servable_identifier=m.pt HTTP/1.1\r\nHost: x:8000\r\nContent-Length: 3\r\n\r\nabc"


def read(request_bytes: bytes, cfg: GunicornConfig | None = None):
    buffer = bytearray(1024)
    buffer[: len(request_bytes)] = request_bytes
    return PlainReader(cfg or GunicornConfig()).read(buffer, len(request_bytes))


def configured(**settings: object) -> GunicornConfig:
    cfg = GunicornConfig()
    for name, value in settings.items():
        cfg.set(name, value)
    return cfg


@pytest.mark.parametrize(
    ("request_bytes", "method", "uri", "body"),
    [
        (PLAIN, "POST", "/serve?servable_identifier=m.pt", b"abc"),
        # Bytes after the request (a pipelined one) are not part of it.
        (b"POST /serve HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET / HTTP/1.1\r\n", "POST", "/serve", b"abc"),
        (b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/healthcheck", b""),
        # What Python's requests sends, which HTTP/1.1 means anyway.
        (b"POST /serve HTTP/1.1\r\nConnection: Keep-Alive\r\ncontent-length: 3\r\n\r\nabc", "POST", "/serve", b"abc"),
    ],
)
def test_a_plain_request_is_read_up_to_its_end(request_bytes, method, uri, body):
    request = read(request_bytes)
    assert (request.method, request.uri) == (method, uri)
    assert request.body_start == request_bytes.index(b"\r\n\r\n") + 4
    assert request_bytes[request.body_start : request.size] == body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /serve HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc",  # the body is not all there
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\n",  # nor the headers
        b"POST /serve HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nConnection: Upgrade\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nConnection: keep-alive, TE\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nHost: a\r\nhost: b\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: \xb3\r\n\r\nabc",  # a digit, but not an ASCII one
        b"POST /serve HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc",
        b"POST /serve HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"POST /serve  HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"post /serve HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"POST //serve HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /serve#x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"POST http://x/serve HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nX-Forwarded-For: 10.0.0.1\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nX-Forwarded-Proto: https\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nForwarded: for=10.0.0.1\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nSCRIPT_NAME: /x\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nHost : x\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nX-A: a\r\n b\r\n\r\nabc",  # folded
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nX-A: caf\xe9\r\n\r\nabc",
        b"POST /serve HTTP/1.1\r\nContent-Length: 3\r\nNo colon\r\n\r\nabc",
    ],
)
def test_other_requests_are_left_to_gunicorn(request_bytes):
    assert read(request_bytes) is None


def test_requests_over_gunicorns_limits_are_left_to_it():
    assert read(PLAIN, configured(limit_request_line=40)) is None
    assert read(PLAIN, configured(limit_request_line=60)) is not None
    assert read(PLAIN, configured(limit_request_fields=2)) is None
    assert read(PLAIN, configured(limit_request_fields=3)) is not None
    assert read(PLAIN, configured(limit_request_field_size=18)) is None
    assert read(PLAIN, configured(limit_request_field_size=21)) is not None


def test_no_request_is_plain_behind_tls(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("")
    assert read(PLAIN, configured(certfile=str(cert), keyfile=str(cert))) is None


@pytest.mark.parametrize("server", [SERVER, "/run/torch-serving.sock", "localhost:8000"])
@pytest.mark.parametrize(
    "request_bytes",
    [
        PLAIN,
        (
            b"POST /v2/models/m%20x/infer?a=1&b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 3\r\nInference-Header-Content-Length: 2\r\nAccept: */*\r\nUser-Agent: t/1\r\n\r\nabc"
        ),
        b"POST /serve HTTP/1.1\r\nHost: x:81\r\nContent-Length: 0\r\n\r\n",
        b"GET /healthcheck HTTP/1.1\r\n\r\n",
        (
            b"POST /serve?servable_identifier=m.pt HTTP/1.1\r\nHost: x\r\nUser-Agent: python-requests/2.34.2\r\n"
            b"Accept-Encoding: gzip, deflate, br\r\nAccept: */*\r\nConnection: keep-alive\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        ),
    ],
)
def test_the_environ_of_a_plain_request_is_gunicorns_of_its_own_reading(request_bytes, server):
    cfg = GunicornConfig()
    request = read(request_bytes, cfg)
    request.received(memoryview(request_bytes))
    parsed = next(iter(RequestParser(cfg, iter([request_bytes]), CLIENT)))
    ours = PlainReader(cfg).environ(request, CLIENT, server)
    _, theirs = wsgi.create(parsed, None, CLIENT, server, cfg)
    theirs["wsgi.multithread"] = True  # as gunicorn's gthread worker sets it

    assert ours["wsgi.input"].read() == theirs["wsgi.input"].read()
    assert isinstance(ours["wsgi.errors"], wsgi.WSGIErrorsWrapper)
    made_anew = {"wsgi.input", "wsgi.errors", "wsgi.early_hints"}  # objects of their own for each request
    assert {k: v for k, v in ours.items() if k not in made_anew} == {
        k: v for k, v in theirs.items() if k not in made_anew
    }
    assert "wsgi.early_hints" not in ours  # nothing can be sent before an answer made in the event loop
    # What gunicorn's Response and access log read of a request.
    assert (request.method, request.version, request.should_close(), request.path, request.query) == (
        parsed.method,
        parsed.version,
        parsed.should_close(),
        parsed.path,
        parsed.query,
    )


def test_a_request_under_the_script_name_is_plain_and_its_path_follows_it(monkeypatch):
    monkeypatch.setenv("SCRIPT_NAME", "/api")
    cfg = GunicornConfig()
    assert read(PLAIN, cfg) is None  # gunicorn refuses a path outside the script name
    request_bytes = PLAIN.replace(b"POST /serve", b"POST /api/serve")
    request = read(request_bytes, cfg)
    request.received(memoryview(request_bytes))
    parsed = next(iter(RequestParser(cfg, iter([request_bytes]), CLIENT)))
    _, theirs = wsgi.create(parsed, None, CLIENT, SERVER, cfg)
    ours = PlainReader(cfg).environ(request, CLIENT, SERVER)
    assert (ours["SCRIPT_NAME"], ours["PATH_INFO"]) == (theirs["SCRIPT_NAME"], theirs["PATH_INFO"])
    assert (ours["SCRIPT_NAME"], ours["PATH_INFO"]) == ("/api", "/serve")


class _Written:
    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


@pytest.mark.parametrize("method", ["POST", "GET", "HEAD"])
@pytest.mark.parametrize(
    ("status", "headers", "chunks", "force_close"),
    [
        ("200 OK", [("content-type", "application/json"), ("content-length", "2")], [b"{}"], False),
        ("200 OK", [("Content-Length", " 5 ")], [b"ab", b"cde"], False),
        ("200 OK", [("Content-Length", "2")], [b"abcd"], False),  # never more than announced
        ("200 OK", [("X-A", "1")], [b"abc", b"", b"de"], False),  # no length: chunked
        ("200 OK", [("X-A", "1")], [], False),
        ("503 Service Unavailable", [("Retry-After", "1"), ("Content-Length", "0")], [], True),
        ("204 No Content", [("Content-Length", "3")], [b"abc"], False),
        ("304 Not Modified", [("Content-Length", "3")], [b"abc"], False),
        ("200 OK", [("Connection", "close"), ("Keep-Alive", "5"), ("Content-Length", "1")], [b"a"], False),
        ("101 Switching Protocols", [("Connection", "Upgrade"), ("Upgrade", "websocket")], [], False),
    ],
)
def test_a_plain_response_is_what_gunicorn_writes(method, status, headers, chunks, force_close):
    cfg = GunicornConfig()
    request = read(PLAIN.replace(b"POST", method.encode(), 1), cfg)
    written = _Written()
    theirs = wsgi.Response(request, written, cfg)
    ours = PlainResponse(util.http_date(), method)
    for response in (theirs, ours):
        if force_close:
            response.force_close()
    write = theirs.start_response(status, list(headers))
    for chunk in chunks:
        write(chunk)
    theirs.close()
    ours.start_response(status, list(headers))
    answer = ours.answer(iter(chunks))

    assert _DATE.sub(b"", answer) == _DATE.sub(b"", written.data)
    assert _DATE.search(answer)
    assert (ours.status, ours.status_code, ours.headers, ours.response_length, ours.sent, ours.should_close()) == (
        theirs.status,
        theirs.status_code,
        theirs.headers,
        theirs.response_length,
        theirs.sent,
        theirs.should_close(),
    )


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        ("200 OK", [("X-A", "1\r\nSet-Cookie: a=b")], InvalidResponseHeader),
        ("200 OK", [("X A", "1")], InvalidResponseHeaderName),
        ("200 OK", [("X-A", 1)], TypeError),
        ("OK", [], ValueError),
    ],
)
def test_a_plain_response_refuses_what_gunicorn_refuses(status, headers, error):
    with pytest.raises(error):
        PlainResponse(util.http_date(), "POST").start_response(status, headers)
    with pytest.raises(error):
        wsgi.Response(read(PLAIN), _Written(), GunicornConfig()).start_response(status, headers)


def test_the_date_is_gunicorns(monkeypatch):
    date = HttpDate()
    monkeypatch.setattr("time.time", lambda: 1_800_000_000.75)
    assert date() == util.http_date(1_800_000_000.75) == "Fri, 15 Jan 2027 08:00:00 GMT"
    monkeypatch.setattr("time.time", lambda: 1_800_000_001.0)
    assert date() == util.http_date(1_800_000_001.0) == "Fri, 15 Jan 2027 08:00:01 GMT"
