"""Plain requests, read by the worker itself for answers in its event loop
(``PlainReader``): which requests count as plain, and that gunicorn builds
the same environ from one as from its own reading of the same bytes."""

from __future__ import annotations

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from torch_serving.plain_http import PlainReader

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


@pytest.mark.parametrize("server", [SERVER, "/run/torch-serving.sock"])
@pytest.mark.parametrize(
    "request_bytes",
    [
        PLAIN,
        (
            b"POST /v2/models/m%20x/infer?a=1&b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 3\r\nInference-Header-Content-Length: 2\r\nAccept: */*\r\nUser-Agent: t/1\r\n\r\nabc"
        ),
        b"GET /healthcheck HTTP/1.1\r\n\r\n",
    ],
)
def test_gunicorn_builds_the_environ_of_a_plain_request_as_of_its_own_reading(request_bytes, server):
    cfg = GunicornConfig()
    request = read(request_bytes, cfg)
    request.received(memoryview(request_bytes))
    parsed = next(iter(RequestParser(cfg, iter([request_bytes]), CLIENT)))
    _, ours = wsgi.create(request, None, CLIENT, server, cfg)
    _, theirs = wsgi.create(parsed, None, CLIENT, server, cfg)

    assert ours["wsgi.input"].read() == theirs["wsgi.input"].read()
    made_anew = {"wsgi.input", "wsgi.errors", "wsgi.early_hints"}  # objects of their own for each request
    assert {k: v for k, v in ours.items() if k not in made_anew} == {
        k: v for k, v in theirs.items() if k not in made_anew
    }
    # What gunicorn's Response and access log read of a request.
    assert (request.method, request.version, request.should_close(), request.path, request.query) == (
        parsed.method,
        parsed.version,
        parsed.should_close(),
        parsed.path,
        parsed.query,
    )
