"""Hostile input against a real server: after each case the answer is a
clean error, the server is live, a known-good request still gets its exact
golden answer, and the cache holds what it held before."""

from __future__ import annotations

import json
import os
import socket
import time
import zipfile

import pytest
import requests
import torch

from tests.conftest import body_of, tensor_json
from tests.integration.server import serving

GOLDEN_BODY = body_of(tensor_json(torch.tensor([[1.0, -2.5, 1e-3, 7.0]])))
GOLDEN_RESULT = {"type": "tensor", "data_type": "float32", "shape": [1, 4], "value": [3, -4, 1.002, 15]}


@pytest.fixture(scope="module")
def hostile_root(model_root, tmp_path_factory):
    """The test models plus traps: escapes, special files, broken archives."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "models"
    root.mkdir()
    for name in ["tiny.pt", "echo.pt"]:
        (root / name).write_bytes((model_root / name).read_bytes())
    sibling = base / "models-evil"
    sibling.mkdir()
    (sibling / "m.pt").write_bytes((model_root / "tiny.pt").read_bytes())
    (base / "outside.pt").write_bytes((model_root / "tiny.pt").read_bytes())
    (root / "sibling.pt").symlink_to(sibling / "m.pt")
    (root / "alias.pt").symlink_to(root / "tiny.pt")
    (root / "out.pt").symlink_to(base / "outside.pt")
    (root / "dir.pt").mkdir()
    os.mkfifo(root / "fifo.pt")
    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(os.urandom(4096))
    archive = (model_root / "tiny.pt").read_bytes()
    (root / "truncated.pt").write_bytes(archive[: len(archive) // 2])
    (root / "state_dict.pt").write_bytes((model_root / "state_dict.pt").read_bytes())
    with zipfile.ZipFile(root / "not_script.pt", "w") as zf:
        zf.writestr("archive/data.pkl", b"not a pickle")
    return root


@pytest.fixture(scope="module")
def server(hostile_root, tmp_path_factory):
    options = ["--model-root", str(hostile_root), "--workers", "1", "--threads", "4", "--max-body-size", "1MiB"]
    with serving(tmp_path_factory, "hostile", *options) as running_server:
        yield running_server


def golden(server) -> None:
    response = requests.post(f"{server.url}/serve?servable_identifier=tiny.pt", data=GOLDEN_BODY, timeout=30)
    assert response.status_code == 200
    assert response.json()["result"] == GOLDEN_RESULT


def cached(server) -> list[str]:
    return requests.get(f"{server.url}/cache", timeout=10).json()["models"]


@pytest.fixture
def unchanged(server):
    """Check, around a case, that the server stays live, right and unchanged."""
    golden(server)
    requests.post(f"{server.url}/serve?servable_identifier=echo.pt", data=GOLDEN_BODY, timeout=30)
    golden(server)
    before = cached(server)
    yield
    assert requests.get(f"{server.url}/healthcheck", timeout=10).status_code == 200
    assert cached(server) == before
    golden(server)
    assert cached(server) == before


def assert_envelope(response: requests.Response, status: int, description: str) -> dict:
    assert response.status_code == status, response.text
    doc = response.json()
    assert doc["code"] == status and doc["description"] == description
    assert doc["message"] == ("Client Error" if status < 500 else "Server Error")
    assert "Traceback" not in doc["detail"] and "/tmp" not in doc["detail"] and "pytest-of" not in doc["detail"]
    return doc


IDENTIFIERS = [
    ("%2e%2e/tiny.pt", 400, "Invalid servable identifier"),
    ("..%2ftiny.pt", 400, "Invalid servable identifier"),
    ("%252e%252e%252ftiny.pt", 404, "Model not found"),
    ("tiny.pt%00", 400, "Invalid servable identifier"),
    ("..%5ctiny.pt", 404, "Model not found"),
    ("%2fetc%2fpasswd", 400, "Invalid servable identifier"),
    ("a" * 3000, 404, "Model not found"),
    ("sibling.pt", 404, "Model not found"),
    ("out.pt", 404, "Model not found"),
    ("dir.pt", 404, "Model not found"),
    ("fifo.pt", 404, "Model not found"),
    ("empty.pt", 422, "Model not loadable"),
    ("random.pt", 422, "Model not loadable"),
    ("truncated.pt", 422, "Model not loadable"),
    ("state_dict.pt", 422, "Model not loadable"),
    ("not_script.pt", 422, "Model not loadable"),
]


@pytest.mark.parametrize(("identifier", "status", "description"), IDENTIFIERS, ids=[i[:30] for i, _, _ in IDENTIFIERS])
def test_identifier_tricks(server, unchanged, identifier, status, description):
    response = requests.post(f"{server.url}/serve?servable_identifier={identifier}", data=GOLDEN_BODY, timeout=30)
    assert_envelope(response, status, description)


BODIES = [
    (b"[" * 100_000 + b"]" * 100_000, "request body is not valid JSON: "),
    (b'{"type": "tensor", "type": "tensor", "value": [1]}', 'duplicate key "type" at body'),
    (b'{"type": "tensor", "value": [1e400]}', "request body is not valid JSON: "),
    (b'{"type": "tensor", "value": [-0.0, 5e-324, 1.7976931348623157e308]}', "expected a finite number"),
    (
        b'{"type": "tensor", "value": [1], "data_type": "int64", "shape": [9223372036854775807]}',
        "shape [9223372036854775807] is too large",
    ),
    (b'{"type": "tensor", "value": ["Infinity", "nan"]}', "expected a finite number"),
    (b'{"type": "tensor", "value": [1, 2', "request body is not valid JSON: "),
    (b"\xef\xbb\xbf[]", "missing argument 'x' (position 0) of forward"),
    (('{"type": "tensor", "value": ["a' + "\u00e9" * 20 + '"]}').encode(), "expected a finite number"),
    (b"[]", "missing argument 'x' (position 0) of forward"),
]


def test_symlink_inside_the_root_serves_its_target(server, unchanged):
    response = requests.post(f"{server.url}/serve?servable_identifier=alias.pt", data=GOLDEN_BODY, timeout=30)
    assert response.json()["result"] == GOLDEN_RESULT


@pytest.mark.parametrize(("body", "detail"), BODIES, ids=[f"body{i}" for i in range(len(BODIES))])
def test_body_tricks(server, unchanged, body, detail):
    response = requests.post(f"{server.url}/serve?servable_identifier=tiny.pt", data=body, timeout=30)
    assert response.status_code == 400
    assert detail in response.json()["detail"] or response.json()["detail"].startswith(detail)


def raw_exchange(server, payload: bytes) -> bytes:
    """Send raw bytes over one connection and return everything answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    """Return what the server sends until it closes the connection."""
    return b"".join(iter(lambda: sock.recv(65536), b""))


def test_body_shorter_than_its_content_length(server, unchanged):
    body = GOLDEN_BODY[:20]
    request = (
        b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(GOLDEN_BODY)
    ) + body
    assert_raw_error(
        split_responses(raw_exchange(server, request))[0],
        400,
        "Incomplete request body",
        f"received 20 of the {len(GOLDEN_BODY)} bytes Content-Length announced",
    )


def assert_raw_error(answer: tuple[int, bytes], status: int, description: str, detail: str) -> None:
    """Assert that ``answer`` (a status and body from ``split_responses``) is the error envelope of
    ``status`` with ``description`` and ``detail``."""
    got_status, body = answer
    assert got_status == status
    assert json.loads(body) == {
        "code": status,
        "message": "Client Error" if status < 500 else "Server Error",
        "description": description,
        "detail": detail,
    }


def split_responses(stream: bytes) -> list[tuple[int, bytes]]:
    """Split the bytes of consecutive HTTP/1.1 answers into (status, body) pairs."""
    answers = []
    while stream:
        head, _, rest = stream.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        answers.append((int(lines[0].split()[1]), rest[:length]))
        stream = rest[length:]
    return answers


def serve_request(body: bytes, close: bool) -> bytes:
    connection = b"close" if close else b"keep-alive"
    head = b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\nConnection: %s\r\n" % connection
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_pipelined_requests_each_get_their_own_answer(server, unchanged):
    # Sent in one write, the second request's bytes arrive with the first's:
    # the server must keep them for the next request, not read them as body.
    second_body = body_of(tensor_json(torch.tensor([[0.5, 1.0, 2.0, 3.0]])))
    payload = serve_request(GOLDEN_BODY, close=False) + serve_request(second_body, close=True)
    answers = split_responses(raw_exchange(server, payload))
    assert [status for status, _ in answers] == [200, 200]
    assert json.loads(answers[0][1])["result"] == GOLDEN_RESULT
    assert json.loads(answers[1][1])["result"]["value"] == [2, 3, 5, 7]


def test_body_sent_after_100_continue(server, unchanged):
    # What curl does for bodies over 1 kB: the headers, then the body only
    # once the server said to go on.
    request = serve_request(GOLDEN_BODY, close=True)
    head, _, body = request.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = read_until_closed(sock)
    status, answer_body = split_responses(answer)[0]
    assert status == 200
    assert json.loads(answer_body)["result"] == GOLDEN_RESULT


@pytest.mark.parametrize(
    ("target", "length", "status", "field", "text"),
    [
        ("/serve?servable_identifier=tiny.pt", 2 << 20, 413, "description", "Request body too large"),
        ("/serve?servable_identifier=missing.pt", 100, 404, "description", "Model not found"),
        ("/v2/models/missing/infer", 100, 404, "error", "no model file missing,"),
    ],
)
def test_an_answer_the_headers_decide_comes_without_100_continue(
    server, unchanged, target, length, status, field, text
):
    head = (f"POST {target} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)  # and never the body, as a client that waits for 100 Continue
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"100 Continue" not in answer
    assert b"\r\nConnection: close\r\n" in answer
    assert json.loads(split_responses(answer)[0][1])[field].startswith(text)


def test_body_arriving_in_pieces_is_read_whole(server, unchanged):
    request = serve_request(GOLDEN_BODY, close=True)
    split_at = request.index(b"\r\n\r\n") + 4 + 10
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        for start, end in [(0, split_at), (split_at, split_at + 7), (split_at + 7, len(request))]:
            sock.sendall(request[start:end])
            time.sleep(0.2)
        answer = read_until_closed(sock)
    status, body = split_responses(answer)[0]
    assert status == 200
    assert json.loads(body)["result"] == GOLDEN_RESULT


def test_lying_content_length_under_the_limit(server, unchanged):
    request = (
        (
            b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        + GOLDEN_BODY
        + b" " * 1000
    )
    answer = raw_exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 400")


def test_oversize_content_length_is_refused_without_reading(server, unchanged):
    request = (
        b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: 10000000000\r\n\r\n" + b"x" * 1000
    )
    answer = raw_exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 413")


def test_chunked_oversize_body_is_cut_off(server, unchanged):
    chunk = b" " * 65536
    pieces = iter([chunk] * 40)
    response = requests.post(f"{server.url}/serve?servable_identifier=tiny.pt", data=pieces, timeout=30)
    assert_envelope(response, 413, "Request body too large")


def test_a_chunk_announced_past_the_limit_is_refused_at_once(server, unchanged):
    head = b"POST /serve?servable_identifier=tiny.pt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + b"ffffffffffffffffff\r\n[{")  # then nothing: the chunk never comes
        [(status, body)] = split_responses(read_until_closed(sock))
    assert time.monotonic() - began < 2
    assert status == 413
    assert json.loads(body)["detail"] == (
        f"chunks announce {0xFFFFFFFFFFFFFFFFFF} bytes, over the limit of {1 << 20} bytes"
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "GET"])
def test_wrong_methods(server, unchanged, method):
    response = requests.request(method, f"{server.url}/serve?servable_identifier=tiny.pt", timeout=30)
    assert_envelope(response, 405, "Method Not Allowed")


@pytest.mark.parametrize("path", ["/nope", "/serve/extra", "/v1/models", "/v1/models/", "/%00"])
def test_unknown_routes(server, unchanged, path):
    response = requests.get(f"{server.url}{path}", timeout=30)
    assert response.status_code in {404, 400}


def test_header_flood_is_refused(server, unchanged):
    headers = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"y" * 50) for i in range(500))
    request = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n"
    answer = raw_exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.1 431")


def test_request_line_too_long_is_refused(server, unchanged):
    request = b"GET /healthcheck?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(server, request)
    assert answer.split(b" ", 2)[1] in {b"400", b"414"}
