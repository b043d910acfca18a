"""What a junk client-certificate chain costs the server per TLS handshake, with and without the chain limit.

    .venv/bin/python -m benchmarks.tls_chain                  # 40 handshakes of each kind, 3 rounds
    .venv/bin/python -m benchmarks.tls_chain --handshakes 20 --rounds 2

Two ``echoseg serve`` processes (the tiny model; mutual TLS ``optional`` with a CA made for the
run): one with ``ECHOSEG_SSL_MAX_CLIENT_CHAIN_KB=100`` (OpenSSL's own default, i.e. the server
before the limit existed), one with the default limit. Rounds alternate between them, so a busy
machine slows both alike. Each round makes, one after the other, ``--handshakes`` handshakes of:

- ``no_cert``: a client without a certificate (a request to /healthz);
- ``junk_chain``: a client whose certificate no trusted CA issued, followed by about
  ``--chain-kb`` KiB of junk certificates (what a scanner of the network can send);
- ``valid``: a client with a valid certificate (a request to /healthz).

Reported: the server process's CPU (user + system, from /proc) per handshake of each kind, and
whether each kind was served or refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import document, export_preset, load_average, served, write_result
from benchmarks.tls import cpu_s

log = logging.getLogger(__name__)

KINDS = ("no_cert", "junk_chain", "valid")


def make_pki(folder: Path, chain_kb: float) -> dict[str, Path]:
    """Server CA and certificate, a scanner CA and a valid client certificate, and an untrusted
    client certificate followed by ``chain_kb`` KiB (DER) of junk certificates."""
    import trustme

    server_ca, scanner_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    files = {k: folder / f"{k}.pem" for k in ("server_ca", "scanner_ca", "server", "valid", "junk")}
    server_ca.cert_pem.write_to_path(files["server_ca"])
    scanner_ca.cert_pem.write_to_path(files["scanner_ca"])
    server_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(files["server"])
    scanner_ca.issue_cert("scanner.echo.test").private_key_and_cert_chain_pem.write_to_path(files["valid"])
    leaf = rogue_ca.issue_cert("scanner.echo.test").private_key_and_cert_chain_pem.bytes()
    junk, size = [], 0
    while size < chain_kb * 1024:
        cert = trustme.CA().issue_cert(f"junk{len(junk)}.example").cert_chain_pems[0].bytes()
        size += len(ssl.PEM_cert_to_DER_cert(cert.decode()))
        junk.append(cert)
    files["junk"].write_bytes(leaf + b"".join(junk))
    return files


def handshake(port: int, ctx: ssl.SSLContext) -> bool:
    """Connect, handshake and ask for /healthz; True when an answer came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.1 200")
        except (ssl.SSLError, OSError):
            return False


def contexts(pki: dict[str, Path]) -> dict[str, ssl.SSLContext]:
    out = {}
    for kind in KINDS:
        ctx = ssl.create_default_context(cafile=str(pki["server_ca"]))
        if kind != "no_cert":
            ctx.load_cert_chain(str(pki["valid" if kind == "valid" else "junk"]))
        out[kind] = ctx
    return out


def one_round(server, ctxs: dict, n: int) -> dict[str, dict]:
    out = {}
    for kind, ctx in ctxs.items():
        before = cpu_s(server.process.pid)
        port = int(server.url.rsplit(":", 1)[1])
        served_ok = sum(handshake(port, ctx) for _ in range(n))
        out[kind] = {"cpu_ms": (cpu_s(server.process.pid) - before) * 1e3, "served": served_ok, "n": n}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--handshakes", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chain-kb", type=float, default=90.0)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default="tls_chain")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="echoseg-tls-chain-") as tmp:
        folder = Path(tmp)
        pki = make_pki(folder, args.chain_kb)
        model = export_preset("tiny", folder)
        ctxs = contexts(pki)
        tls = [
            "--ssl-certfile", str(pki["server"]), "--ssl-ca-certs", str(pki["scanner_ca"]),
            "--ssl-client-cert", "optional",
        ]  # fmt: skip
        configs = {"openssl_default_100kb": "100", "limit_default": None}
        totals = {c: {k: {"cpu_ms": 0.0, "served": 0, "n": 0} for k in KINDS} for c in configs}
        with contextlib.ExitStack() as stack:
            servers = {}
            for name, kb in configs.items():
                env = {"ECHOSEG_THREADS": "1", **({"ECHOSEG_SSL_MAX_CLIENT_CHAIN_KB": kb} if kb else {})}
                servers[name] = stack.enter_context(
                    served(model, env, extra_args=tuple(tls), ca_bundle=str(pki["server_ca"]))
                )
            for r in range(args.rounds):
                for name, server in servers.items():
                    for kind, got in one_round(server, ctxs, args.handshakes).items():
                        for field in ("cpu_ms", "served", "n"):
                            totals[name][kind][field] += got[field]
                log.info("round %d of %d done", r + 1, args.rounds)
    result = {
        name: {
            kind: {
                "cpu_ms_per_handshake": round(t["cpu_ms"] / t["n"], 2),
                "served": t["served"],
                "handshakes": t["n"],
            }
            for kind, t in kinds.items()
        }
        for name, kinds in totals.items()
    }
    junk = {name: result[name]["junk_chain"]["cpu_ms_per_handshake"] for name in result}
    ratio = junk["openssl_default_100kb"] / junk["limit_default"] if junk["limit_default"] else None
    doc = document(
        "tls_chain", argv, started, load_average=load_average(), chain_kb=args.chain_kb,
        servers=result, junk_chain_cpu_ratio_before_over_after=round(ratio, 1) if ratio else None,
    )  # fmt: skip
    path = write_result(doc, Path(args.out) if args.out else None, args.name)
    print(json.dumps(result, indent=1))
    print(f"junk chain CPU per handshake, before / after: {ratio and round(ratio, 1)}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
