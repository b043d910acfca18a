"""A client certificate chain larger than ssl_max_client_chain_kb is refused before it is parsed."""

from __future__ import annotations

import ssl

import httpx
import pytest
import trustme

from service.core.tls import OPENSSL_MAX_CERT_LIST, limit_client_chain
from tests.service.conftest import fake_backend


def test_the_chain_limit_reaches_openssl():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert limit_client_chain(ctx, 32 * 1024)
    assert limit_client_chain(ctx, 32 * 1024), "setting the same value again is allowed"
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert limit_client_chain(other, OPENSSL_MAX_CERT_LIST)


@pytest.fixture(scope="module")
def chain_pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain-pki")
    server_ca, scanner_ca = trustme.CA(), trustme.CA()
    files = {k: d / f"{k}.pem" for k in ("server_ca", "scanner_ca", "server", "scanner", "bloated")}
    server_ca.cert_pem.write_to_path(files["server_ca"])
    scanner_ca.cert_pem.write_to_path(files["scanner_ca"])
    server_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(files["server"])
    scanner = scanner_ca.issue_cert("scanner-3.echo.test").private_key_and_cert_chain_pem.bytes()
    files["scanner"].write_bytes(scanner)
    junk = b"".join(trustme.CA().cert_pem.bytes() for _ in range(120))  # ~50 KB of DER
    files["bloated"].write_bytes(scanner + junk)  # a valid certificate, then junk
    return files


def test_a_bloated_client_chain_is_refused(make_server, chain_pki):
    server = make_server(
        fake_backend(), ssl_certfile=str(chain_pki["server"]), ssl_ca_certs=str(chain_pki["scanner_ca"]),
        ssl_client_cert="required", ssl_max_client_chain_kb=16, max_batch=8,
    )  # fmt: skip

    def get(certfile) -> int | str:
        ctx = ssl.create_default_context(cafile=str(chain_pki["server_ca"]))
        ctx.load_cert_chain(str(certfile))
        try:
            return httpx.get(f"{server.url}/v1/models", verify=ctx, timeout=10).status_code
        except httpx.TransportError as exc:
            return type(exc).__name__

    assert get(chain_pki["scanner"]) == 200
    refused = get(chain_pki["bloated"])
    assert refused != 200, "a valid certificate sent with 50 KB of junk chain was verified and served"
