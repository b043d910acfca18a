"""One client cannot stall the event loop or hold the server's connections: request-head size and
header-count limits, a head timeout and a connection cap, on a real ``echoseg serve``."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest

LIMITS = {
    "ECHOSEG_MAX_HEAD_KB": "64",
    "ECHOSEG_MAX_HEADERS": "100",
    "ECHOSEG_HEAD_TIMEOUT_S": "1",
    "ECHOSEG_MAX_CONNECTIONS": "40",
}


def send_head(port: int, parts, read_timeout_s: float = 20) -> tuple[int | None, dict]:
    """Send a request head piece by piece (stopping if the server closes); its status and body."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout_s)
    with contextlib.closing(s):
        for part in parts:
            try:
                s.sendall(part)
            except OSError:  # refused mid-head: the answer is already waiting
                break
        data = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return None, {}
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    return int(head.split(b" ", 2)[1]), payload


def big(n_bytes: int, chunk: int = 65536):
    for _ in range(n_bytes // chunk):
        yield b"a" * chunk


@pytest.fixture
def limited(served):
    return served(**LIMITS)


def test_a_huge_header_gets_431(limited):
    head = [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", *big(8 * 2**20), b"\r\n\r\n"]
    status, body = send_head(limited.port, head)
    assert status == 431 and body["code"] == "head_too_large", (status, body)
    assert "max_head_kb=64" in body["detail"]
    assert httpx.get(f"{limited.url}/healthz", timeout=5).status_code == 200


def test_a_huge_url_gets_431(limited):
    head = [b"GET /healthz?", *big(8 * 2**20), b" HTTP/1.1\r\nHost: x\r\n\r\n"]
    status, body = send_head(limited.port, head)
    assert status == 431 and body["code"] == "head_too_large", (status, body)


def test_too_many_header_lines_get_431(limited):
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(5000))  # 45 KB: under the size limit
    status, body = send_head(limited.port, [b"GET /healthz HTTP/1.1\r\nHost: x\r\n", lines, b"\r\n"])
    assert status == 431 and "max_headers=100" in body["detail"], (status, body)


def test_a_head_that_never_ends_gets_408(limited):
    s = socket.create_connection(("127.0.0.1", limited.port), timeout=20)
    with contextlib.closing(s):
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 408"), data[:100]


def test_silent_connections_are_closed_and_make_room(limited):
    silent = [socket.create_connection(("127.0.0.1", limited.port), timeout=20) for _ in range(120)]
    try:
        # three times the cap of silent connections: a real request still gets through
        assert httpx.get(f"{limited.url}/healthz", timeout=5).status_code == 200
        time.sleep(1.5)  # past the head timeout
        still_open = 0
        for s in silent:
            s.setblocking(False)
            try:
                still_open += s.recv(1) != b""  # b"": closed by the server
            except BlockingIOError:  # nothing to read, not closed
                still_open += 1
            except OSError:  # reset by the server
                pass
        assert still_open == 0, f"{still_open} connections that never sent a request are still open"
    finally:
        for s in silent:
            s.close()
    assert "max_connections=40 reached" in limited.log()
