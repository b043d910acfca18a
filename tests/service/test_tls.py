"""HTTPS and wss:// on a real uvicorn server, with certificates made in the test (trustme).

Every client verifies the server's certificate against the test CA; mutual TLS refuses clients
without a certificate, with one from another CA, or with an expired one; a changed certificate
is served to new connections while an open stream carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import re
import ssl
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import trustme

from echoseg.cli import main
from service.client import stream_frames
from service.core.tls import client_context
from tests.service.conftest import fake_backend, moving_disc_clip

NPY = {"Content-Type": "application/x-npy"}


def npy_bytes(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A server CA and its 127.0.0.1 certificate; a scanner CA with a valid, an expired client
    certificate; another CA with a client certificate; and a server certificate from another CA."""
    d = tmp_path_factory.mktemp("pki")
    server_ca, scanner_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    out = {}

    def write(name: str, blob) -> None:
        out[name] = d / f"{name}.pem"
        blob.write_to_path(out[name])

    write("server_ca", server_ca.cert_pem)
    write("scanner_ca", scanner_ca.cert_pem)
    write("rogue_ca", rogue_ca.cert_pem)
    write("server", server_ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem)
    write("server2", rogue_ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem)
    now = dt.datetime.now(dt.UTC)
    past = {"not_before": now - dt.timedelta(days=30), "not_after": now - dt.timedelta(days=1)}
    write("server_expired", server_ca.issue_cert("127.0.0.1", **past).private_key_and_cert_chain_pem)
    scanner = scanner_ca.issue_cert(
        "scanner-3.echo.test", common_name="scanner-3", organization_name="Echo Lab",
        organization_unit_name="Cardiology",
    )  # fmt: skip
    write("scanner", scanner.private_key_and_cert_chain_pem)
    expired = scanner_ca.issue_cert("scanner-9.echo.test", **past)
    write("scanner_expired", expired.private_key_and_cert_chain_pem)
    write("rogue", rogue_ca.issue_cert("scanner-3.echo.test").private_key_and_cert_chain_pem)
    return out


def tls_settings(pki, **extra) -> dict:
    return {"ssl_certfile": str(pki["server"]), "max_batch": 8, **extra}


def mtls_settings(pki, **extra) -> dict:
    return tls_settings(pki, ssl_ca_certs=str(pki["scanner_ca"]), ssl_client_cert="required", **extra)


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_https_rest_and_wss_stream_verify_the_certificate(make_server, pki, tmp_path):
    audit = tmp_path / "audit.jsonl"
    server = make_server(fake_backend(), **tls_settings(pki, audit_log=str(audit)))
    assert server.url.startswith("https://")
    ca = client_context(str(pki["server_ca"]))
    clip = moving_disc_clip(12)

    resp = httpx.post(f"{server.url}/v1/segment", content=npy_bytes(clip), headers=NPY, verify=ca, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["frames"] == 12

    report = asyncio.run(stream_frames(clip, server.url, fps=50, tls=ca))  # https:// -> wss://
    assert report.close_code == 1000 and report.indices == list(range(12))

    # a client that trusts only the system CAs refuses the server: it does not know the test CA
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/v1/models", timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        asyncio.run(stream_frames(clip, server.url.replace("https", "wss"), fps=None))
    # plain HTTP on the TLS port is not served
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url.replace("https", "http") + "/healthz", timeout=10)

    lines = audit_lines(audit)
    assert [(x["event"], x["tls"], x["outcome"]) for x in lines] == [
        ("request", True, "ok"),
        ("stream", True, "ok"),
    ]
    assert lines[0]["frames"] == 12 and lines[1]["frames"] == 12


def test_expired_server_certificate_is_refused_by_clients(make_server, pki):
    server = make_server(fake_backend(), ssl_certfile=str(pki["server_expired"]))
    ca = client_context(str(pki["server_ca"]))
    with pytest.raises(httpx.ConnectError, match="certificate has expired"):
        httpx.get(f"{server.url}/healthz", verify=ca, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        asyncio.run(stream_frames(moving_disc_clip(3), server.url, fps=None, tls=ca))


def _refusal(url: str, ctx: ssl.SSLContext) -> str:
    """What a client learns when the server refuses its certificate (TLS 1.3: on the first read)."""
    try:
        resp = httpx.get(f"{url}/v1/models", verify=ctx, timeout=10)
    except httpx.TransportError as exc:
        return str(exc)
    return f"answered {resp.status_code}"


def test_mutual_tls_refuses_clients_without_a_valid_certificate(make_server, pki, tmp_path):
    audit = tmp_path / "audit.jsonl"
    settings = mtls_settings(pki, audit_log=str(audit), api_keys="sk-test-mtls-9b1f")
    server = make_server(fake_backend(), **settings)

    def ctx(cert: str | None) -> ssl.SSLContext:
        return client_context(str(pki["server_ca"]), str(pki[cert]) if cert else None)

    # a scanner with its certificate: authenticated as the certificate's subject, no key needed
    resp = httpx.get(f"{server.url}/v1/models", verify=ctx("scanner"), timeout=10)
    assert resp.status_code == 200 and "x-key-id" not in resp.headers
    report = asyncio.run(stream_frames(moving_disc_clip(6), server.url, fps=None, tls=ctx("scanner")))
    assert report.close_code == 1000 and len(report.indices) == 6

    # refused: no certificate, one from another CA, an expired one; nothing reaches the app
    for cert in (None, "rogue", "scanner_expired"):
        assert _refusal(server.url, ctx(cert)).startswith("Server disconnected"), cert
    clip_file = tmp_path / "clip.npy"
    clip_file.write_bytes(npy_bytes(moving_disc_clip(3)))

    def cli(command: str, cert: str | None) -> str:
        argv = [command, str(clip_file), "--url", server.url, "--ca-bundle", str(pki["server_ca"])]
        argv += ["--client-cert", str(pki[cert])] if cert else []
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(argv) == 1
        return out.getvalue()

    # the CLI clients over https:// and wss:// with a CA bundle and a client certificate
    ok = ["--ca-bundle", str(pki["server_ca"]), "--client-cert", str(pki["scanner"])]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["segment", str(clip_file), "--url", server.url, "--out", str(tmp_path), *ok]) == 0
        wss = server.url.replace("https://", "wss://")
        assert main(["stream", str(clip_file), "--url", wss, "--fps", "0", *ok]) == 0
    assert (tmp_path / "clip.json").exists()

    # the CLI says why (the server's TLS alert does not reach the client, see explain_refusal)
    assert "requires a client certificate (mutual TLS)" in cli("segment", None)
    assert "requires a client certificate (mutual TLS)" in cli("stream", None)
    assert "not issued by a CA the server trusts" in cli("segment", "rogue")
    assert re.search(r"scanner_expired.pem: it expired on \d{4}-", cli("stream", "scanner_expired"))

    lines = audit_lines(audit)
    assert [x["principal"] for x in lines] == ["cert:CN=scanner-3,OU=Cardiology,O=Echo Lab"] * 4
    assert {x["auth"] for x in lines} == {"cert"}


def test_optional_client_certificate_or_a_key(make_server, pki):
    """ssl_client_cert=optional: a scanner authenticates by certificate, other clients by key."""
    server = make_server(
        fake_backend(), **tls_settings(pki, ssl_ca_certs=str(pki["scanner_ca"]), ssl_client_cert="optional"),
        api_keys="sk-test-optional-4c2a", client_cert_scopes="stream",
    )  # fmt: skip
    plain = client_context(str(pki["server_ca"]))
    scanner = client_context(str(pki["server_ca"]), str(pki["scanner"]))
    url = f"{server.url}/v1/segment"
    body = npy_bytes(moving_disc_clip(4))
    assert httpx.post(url, content=body, headers=NPY, verify=plain, timeout=30).status_code == 401
    key = {**NPY, "Authorization": "Bearer sk-test-optional-4c2a"}
    assert httpx.post(url, content=body, headers=key, verify=plain, timeout=30).status_code == 200
    # the certificate holds only the stream scope here
    refused = httpx.post(url, content=body, headers=NPY, verify=scanner, timeout=30)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert "cert:CN=scanner-3" in refused.json()["detail"]
    report = asyncio.run(stream_frames(moving_disc_clip(4), server.url, fps=None, tls=scanner))
    assert report.close_code == 1000


def _swap(dst: Path, src: Path) -> None:
    tmp = dst.with_suffix(".new")
    tmp.write_bytes(src.read_bytes())
    tmp.replace(dst)  # as a Secret update: a new file at the same path


def test_certificate_reload_keeps_open_streams(make_server, pki, tmp_path):
    cert = tmp_path / "server.pem"
    cert.write_bytes(pki["server"].read_bytes())
    server = make_server(fake_backend(), ssl_certfile=str(cert), reload_interval_s=0.1, max_batch=8)
    old_ca = client_context(str(pki["server_ca"]))
    new_ca = client_context(str(pki["rogue_ca"]))
    frames = moving_disc_clip(40)
    result: dict = {}

    async def long_stream() -> None:  # opened before the swap, runs across it
        result["report"] = await stream_frames(frames, server.url, fps=25, tls=old_ca)

    thread = threading.Thread(target=lambda: asyncio.run(long_stream()))
    thread.start()
    time.sleep(0.5)
    swapped = time.monotonic()
    _swap(cert, pki["server2"])
    while True:  # new handshakes get the new certificate once the watcher saw the file
        try:
            httpx.get(f"{server.url}/healthz", verify=new_ca, timeout=5)
            break
        except httpx.ConnectError:
            assert time.monotonic() - swapped < 10, "the new certificate was not served within 10 s"
            time.sleep(0.05)
    took = time.monotonic() - swapped
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/healthz", verify=old_ca, timeout=5)
    thread.join(30)
    report = result["report"]
    assert report.close_code == 1000 and report.indices == list(range(40)), "the open stream was dropped"
    print(f"certificate reload: new handshakes used the new certificate {took * 1e3:.0f} ms after the swap")

    # a forced reload (what SIGHUP does) with a broken file keeps the certificate that works
    cert.write_text("not a certificate")
    server.call(_force_reload(server.service))
    assert httpx.get(f"{server.url}/healthz", verify=new_ca, timeout=5).status_code == 200


async def _force_reload(service) -> None:
    service.request_reload()
    await asyncio.sleep(0.3)


def test_tls_settings_are_checked(pki):
    from service.core.config import Settings

    with pytest.raises(ValueError, match="needs ssl_ca_certs"):
        Settings(ssl_certfile=str(pki["server"]), ssl_client_cert="required")
    with pytest.raises(ValueError, match="need ssl_certfile"):
        Settings(ssl_keyfile=str(pki["server"]))
    with pytest.raises(ValueError, match="unknown \\['admin'\\]"):
        Settings(client_cert_scopes="stream,admin")
    from service.core.tls import ServerTLS

    with pytest.raises(FileNotFoundError, match="does not exist"):
        ServerTLS(Settings(ssl_certfile="/nonexistent/cert.pem"))
    with pytest.raises(ValueError, match="not a matching PEM certificate and key"):
        ServerTLS(Settings(ssl_certfile=str(pki["server_ca"])))  # a certificate without its key


def test_serve_names_a_bad_tls_option(tmp_path):
    """`echoseg serve` refuses bad TLS options before loading anything, naming what is wrong."""

    def serve(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["serve", "--model", str(tmp_path), *argv])
        return code, out.getvalue()

    code, text = serve("--ssl-certfile", "server.pem", "--ssl-client-cert", "required")
    assert code == 2 and "ssl_client_cert=required needs ssl_ca_certs" in text
    code, text = serve("--ssl-certfile", str(tmp_path / "nope.pem"))
    assert code == 2 and f"TLS file {tmp_path / 'nope.pem'} does not exist" in text
    code, text = serve("--api-key-file", str(tmp_path / "keys.json"))
    assert code == 2 and "api_key_file" in text and "does not exist" in text
