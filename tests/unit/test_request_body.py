"""Receiving a body from gunicorn's socket (the worker's ``BodySource``, which ``read_body`` uses):
exactly the body, nothing of the next request, 408 past the deadline.

These use gunicorn's own reader classes over a socket pair, so a gunicorn
release that changes them makes these fail instead of silently sending
every body through the slower stream.
"""

from __future__ import annotations

import socket
import time

import falcon
import falcon.testing
import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from torch_serving import RequestBody
from torch_serving.environ import BODY_SOURCE
from torch_serving.errors import RequestError
from torch_serving.request_body import read_body
from torch_serving.worker import _SocketBody

SOURCE = _SocketBody()

BODY = b'[{"type": "tensor", "value": [[1.0, 2.0, 3.0, 4.0]]}]'
NEXT_REQUEST = b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\n"
LATER = time.monotonic() + 3600  # a deadline these tests never reach


@pytest.fixture
def sockets():
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        yield server_side, client_side


def gunicorn_environ(sock: socket.socket, held: bytes, length: int) -> dict:
    """The environ gunicorn builds, its reader already holding ``held``."""
    unreader = SocketUnreader(sock)
    unreader.unread(held)
    return {"wsgi.input": Body(LengthReader(unreader, length)), "gunicorn.socket": sock}


def receive(env: dict, length: int, deadline: float):
    return SOURCE.receive(env, RequestBody, length, deadline)


@pytest.mark.parametrize("held_length", [0, 10, len(BODY)])
def test_the_body_is_what_gunicorn_held_then_the_socket(sockets, held_length):
    server_side, client_side = sockets
    env = gunicorn_environ(server_side, BODY[:held_length], len(BODY))
    client_side.sendall(BODY[held_length:] + NEXT_REQUEST)

    body, received = receive(env, len(BODY), LATER)

    assert (bytes(memoryview(body)), received) == (BODY, len(BODY))
    assert env["wsgi.input"].read() == b""  # gunicorn sees the body consumed
    assert server_side.recv(1024) == NEXT_REQUEST


def test_bytes_of_a_pipelined_request_go_back_to_gunicorn(sockets):
    server_side, _ = sockets
    env = gunicorn_environ(server_side, BODY + NEXT_REQUEST, len(BODY))

    body, received = receive(env, len(BODY), LATER)

    assert (bytes(memoryview(body)), received) == (BODY, len(BODY))
    assert env["wsgi.input"].reader.unreader.read() == NEXT_REQUEST


def test_a_client_that_stops_early_yields_what_arrived(sockets):
    server_side, client_side = sockets
    env = gunicorn_environ(server_side, b"", len(BODY))
    client_side.sendall(BODY[:20])
    client_side.shutdown(socket.SHUT_WR)

    _, received = receive(env, len(BODY), LATER)

    assert received == 20


def test_other_streams_and_sockets_with_a_timeout_are_left_alone(sockets):
    server_side, _ = sockets
    assert receive({"wsgi.input": object(), "gunicorn.socket": server_side}, 5, LATER) is None
    env = gunicorn_environ(server_side, BODY, len(BODY))
    server_side.settimeout(5)
    assert receive(env, len(BODY), LATER) is None
    assert env["wsgi.input"].read() == BODY  # nothing was taken


def test_a_client_that_stalls_past_the_deadline_gets_408_and_the_connection_ends(sockets):
    server_side, client_side = sockets
    env = gunicorn_environ(server_side, BODY[:10], len(BODY))
    client_side.sendall(BODY[10:20])

    request = falcon.testing.create_req(method="POST", headers={"Content-Length": str(len(BODY))})
    request.env |= env | {BODY_SOURCE: SOURCE}
    with pytest.raises(RequestError) as info:
        read_body(request, 1 << 20, time.monotonic() + 0.2)

    assert (info.value.status, info.value.description) == (408, "Request Timeout")
    assert info.value.detail == (
        "the request body did not arrive before the request's deadline"
        f" (received 20 of the {len(BODY)} bytes Content-Length announced)"
    )
    # Gunicorn must close the connection, not read the rest as a next request.
    assert env["wsgi.input"].failed is True
    assert server_side.gettimeout() is None
