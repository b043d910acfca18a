"""Who a caller is: a certificate identity belongs to its live connection, an empty key file lets
nobody in, a percent-encoded ``token`` never reaches the log, a revoked certificate is refused
(and its open stream closed) without a restart. Real servers on 127.0.0.1, real TLS clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import socket
import ssl
import struct
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.core.keys import add_key, remove_key
from service.core.tls import client_context
from tests.sensitive import KEYS
from tests.service.conftest import fake_backend
from tests.service.test_tls import pki  # noqa: F401 - the test CAs and certificates (module fixture)

CERT_SUBJECT = "cert:CN=scanner-3,OU=Cardiology,O=Echo Lab"


def get_from_port(port: int, source_port: int, ctx: ssl.SSLContext, path: str = "/v1/models") -> int:
    """GET ``path`` over TLS from the fixed ``source_port``, read the status, then reset the
    connection (no TIME_WAIT: the next client may take the same source port at once)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    raw.bind(("127.0.0.1", source_port))
    raw.settimeout(20)
    raw.connect(("127.0.0.1", port))
    conn = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        return int(head.split(b" ", 2)[1])
    finally:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def free_source_ports(n: int) -> list[int]:
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def test_a_certificate_identity_dies_with_its_connection(make_server, pki, tmp_path):  # noqa: F811
    keys = tmp_path / "keys.json"
    add_key(keys, "pacs-bridge", KEYS["bridge"], ["segment"])
    audit = tmp_path / "audit.jsonl"
    server = make_server(
        fake_backend(), ssl_certfile=str(pki["server"]), ssl_ca_certs=str(pki["scanner_ca"]),
        ssl_client_cert="optional", api_key_file=str(keys), audit_log=str(audit), max_batch=8,
    )  # fmt: skip
    scanner = client_context(str(pki["server_ca"]), str(pki["scanner"]))
    anonymous = client_context(str(pki["server_ca"]))
    got = []
    for source_port in free_source_ports(5):
        with_cert = get_from_port(server.port, source_port, scanner)
        time.sleep(0.05)
        without = get_from_port(server.port, source_port, anonymous)  # same (ip, port) as the closed one
        got.append((with_cert, without))
    assert got == [(200, 401)] * 5, f"(with certificate, then without from the same port): {got}"
    deadline = time.monotonic() + 10  # the audit line is written just after the answer is sent
    while len(audit.read_text().splitlines()) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["principal"] for x in lines] == [CERT_SUBJECT, "anonymous"] * 5


def test_an_empty_key_file_lets_nobody_in(fake, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="service.state")
    keys = tmp_path / "keys.json"
    add_key(keys, "scanner-3", KEYS["scanner"], ["stream", "segment"])
    server = fake(api_key_file=str(keys), reload_interval_s=0.1)
    bearer = {"Authorization": f"Bearer {KEYS['scanner']}"}
    assert httpx.get(f"{server.url}/v1/models", headers=bearer, timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 401

    assert remove_key(keys, "scanner-3")  # what `echoseg keys remove` leaves: {"keys": {}}
    assert json.loads(keys.read_text()) == {"keys": {}}
    deadline = time.monotonic() + 10
    while "keys reloaded: 0 keys" not in caplog.text:
        assert time.monotonic() < deadline, "the emptied key file was not re-read"
        time.sleep(0.05)

    no_key = httpx.get(f"{server.url}/v1/models", timeout=10)
    assert no_key.status_code == 401, "zero keys must not turn authentication off"
    assert "holds no keys" in no_key.json()["detail"]
    assert httpx.get(f"{server.url}/v1/models", headers=bearer, timeout=10).status_code == 401
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["problems"] == ["no_api_keys"]

    async def stream_without_key():
        async with connect(server.url.replace("http", "ws") + "/v1/stream") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.send(json.dumps({"type": "start", "width": 8, "height": 8}))
                await asyncio.wait_for(ws.recv(), 10)
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code

    assert asyncio.run(stream_without_key()) == 1008
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "holds no keys" in r.getMessage()]
    assert errors, "an emptied key file must be logged as an error"

    add_key(keys, "scanner-3", KEYS["scanner"], ["stream", "segment"])
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "a key added back did not make the server ready"
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/v1/models", headers=bearer, timeout=10).status_code == 200


def test_a_percent_encoded_token_name_is_redacted(served, tmp_path):
    keys = tmp_path / "keys.json"
    add_key(keys, "scanner-3", KEYS["scanner"], ["stream", "segment"])
    server = served(ECHOSEG_API_KEY_FILE=str(keys))

    async def stream(name: str) -> str:
        url = server.url.replace("http", "ws") + f"/v1/stream?{name}={KEYS['scanner']}"
        async with connect(url) as ws:
            with contextlib.suppress(ConnectionClosed):  # a refused one is closed at once
                await ws.send(json.dumps({"type": "start", "width": 8, "height": 8}))
            return json.loads(await asyncio.wait_for(ws.recv(), 20))["type"]

    names = ["%74oken", "tok%65n", "to%6Ben", "%54OKEN", "%2574oken", "access%5Ftoken"]
    answers = {name: asyncio.run(stream(name)) for name in names}
    for name in names:
        httpx.get(f"{server.url}/v1/models?{name}={KEYS['scanner']}", timeout=10)
    time.sleep(0.3)
    log = server.log()
    # the server decodes the first three to 'token' and takes the key
    assert [answers[n] for n in names[:3]] == ["ready"] * 3, answers
    assert KEYS["scanner"] not in log, "the key reached the server log"
    for name in names:
        assert re.search(rf"/v1/stream\?{re.escape(name)}=<redacted>", log), (name, log[-2000:])
        assert re.search(rf"/v1/models\?{re.escape(name)}=<redacted>", log), (name, log[-2000:])


def certificate_sha256(pem_path) -> str:
    text = pem_path.read_text()
    block = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)[0]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest()


def write_atomically(path, text: str) -> None:
    """As a Secret update or a config tool does: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_a_revoked_certificate_is_refused_without_a_restart(make_server, pki, tmp_path):  # noqa: F811
    denylist = tmp_path / "revoked.txt"
    write_atomically(denylist, "# revoked client certificates\n")
    server = make_server(
        fake_backend(), ssl_certfile=str(pki["server"]), ssl_ca_certs=str(pki["scanner_ca"]),
        ssl_client_cert="required", ssl_client_denylist=str(denylist), reload_interval_s=0.1, max_batch=8,
    )  # fmt: skip
    scanner = client_context(str(pki["server_ca"]), str(pki["scanner"]))
    assert httpx.get(f"{server.url}/v1/models", verify=scanner, timeout=10).status_code == 200

    async def open_stream_then_revoke() -> tuple[int | None, dict]:
        url = server.url.replace("https", "wss") + "/v1/stream"
        async with connect(url, ssl=scanner) as ws:
            await ws.send(json.dumps({"type": "start", "width": 8, "height": 8}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            fingerprint = certificate_sha256(pki["scanner"])
            colons = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
            write_atomically(denylist, f"# leaked on 2026-12-01\n{colons}  # scanner-3\n")
            last = {}
            try:
                async with asyncio.timeout(10):
                    async for message in ws:
                        if isinstance(message, str):
                            last = json.loads(message)
            except (ConnectionClosed, TimeoutError):
                pass
            return ws.close_code, last

    code, last = asyncio.run(open_stream_then_revoke())
    assert code == 1008 and last["code"] == "unauthorized" and "revoked" in last["detail"]
    refused = httpx.get(f"{server.url}/v1/models", verify=scanner, timeout=10)
    assert refused.status_code == 401 and "ssl_client_denylist" in refused.json()["detail"]

    write_atomically(denylist, "not a fingerprint\n")  # a broken list keeps the previous one in force
    time.sleep(0.5)
    assert httpx.get(f"{server.url}/v1/models", verify=scanner, timeout=10).status_code == 401
    write_atomically(denylist, "")
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/v1/models", verify=scanner, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "a certificate taken off the list was not accepted again"
        time.sleep(0.05)
