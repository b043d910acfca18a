"""TLS of the service: one server ``SSLContext`` that is reloaded in place, and client-certificate subjects.

uvicorn (>= 0.47) takes the context from ``ssl_context_factory``; the listening socket keeps that
object for every new handshake, so :meth:`ServerTLS.reload` calls ``load_cert_chain`` on the live
context: connections made after it get the new certificate, open ones (streams) keep theirs and
are never dropped. The CA bundle of mutual TLS is re-read the same way, but OpenSSL can only add
to a context's trust store: a CA removed from the bundle stays trusted until a restart.

uvicorn does not put the client certificate into the ASGI scope. :meth:`ServerTLS.protocol`
wraps its HTTP protocol class to note each verified peer's certificate subject by connection;
:class:`PeerCertificates` then adds it to the scope as the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_name"]``, RFC 4514), for REST and WebSocket alike.
"""

from __future__ import annotations

import logging
import ssl
import time
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.config import Settings

log = logging.getLogger(__name__)

VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
# RFC 4514 short names of the subject attributes a certificate usually carries
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


def subject_name(cert: dict) -> str:
    """``ssl.SSLSocket.getpeercert()`` subject -> ``CN=scanner-3,O=Hospital`` (most specific first)."""
    parts = [
        f"{_SHORT.get(k, k)}={v.replace(',', chr(92) + ',')}"
        for rdn in cert.get("subject", ())
        for k, v in rdn
    ]
    return ",".join(reversed(parts))


class ServerTLS:
    """The server's certificate, key and (mutual TLS) CA bundle, as one live ``SSLContext``."""

    def __init__(self, settings: Settings) -> None:
        self.certfile = settings.ssl_certfile
        self.keyfile = settings.ssl_keyfile or None
        self.ca_certs = settings.ssl_ca_certs or None
        self.client_cert = settings.ssl_client_cert
        self.peers: dict[tuple, tuple[object, str]] = {}  # (server port, client addr) -> (transport, subject)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load()
        self.context.verify_mode = VERIFY_MODES[self.client_cert]

    @property
    def files(self) -> list[str]:
        return [f for f in (self.certfile, self.keyfile, self.ca_certs) if f]

    def _load(self) -> None:
        for f in self.files:
            if not Path(f).is_file():
                raise FileNotFoundError(f"TLS file {f} does not exist")
        try:
            self.context.load_cert_chain(self.certfile, self.keyfile)
        except ssl.SSLError as exc:
            raise ValueError(
                f"ssl_certfile {self.certfile} / ssl_keyfile {self.keyfile or '(in certfile)'}: "
                f"not a matching PEM certificate and key ({exc.reason or exc})"
            ) from None
        if self.ca_certs:
            try:
                self.context.load_verify_locations(cafile=self.ca_certs)
            except ssl.SSLError as exc:
                raise ValueError(f"ssl_ca_certs {self.ca_certs}: not a PEM CA bundle ({exc})") from None

    def reload(self) -> bool:
        """Re-read the files into the live context (new handshakes only); on error keep the old ones."""
        try:
            self._load()
        except (OSError, ValueError) as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.certfile)
        return True

    def context_factory(self, config, default_factory) -> ssl.SSLContext:
        """uvicorn's ``ssl_context_factory``: always this live context."""
        return self.context

    # -- client certificates -------------------------------------------------------------------
    def protocol(self, base: type) -> type:
        """``base`` (a uvicorn HTTP protocol class) noting each connection's verified client certificate."""
        peers = self.peers

        class PeerCertProtocol(base):
            def connection_made(self, transport) -> None:
                cert = transport.get_extra_info("peercert")  # {} or None unless verified
                if cert:
                    sock = transport.get_extra_info("sockname")
                    peer = transport.get_extra_info("peername")
                    if sock and peer:
                        for key in [k for k, (t, _) in peers.items() if t.is_closing()]:
                            del peers[key]  # connections that ended (HTTP or upgraded to WebSocket)
                        peers[(sock[1], peer[0], peer[1])] = (transport, subject_name(cert))
                super().connection_made(transport)

        PeerCertProtocol.__name__ = f"PeerCert{base.__name__}"
        return PeerCertProtocol

    def subject_of(self, scope: Scope) -> str | None:
        server, client = scope.get("server"), scope.get("client")
        if not server or not client:
            return None
        found = self.peers.get((server[1], client[0], client[1]))
        return found[1] if found else None


class PeerCertificates:
    """ASGI middleware: the ASGI TLS extension's ``client_cert_name`` for connections with a verified cert."""

    def __init__(self, app: ASGIApp, tls: ServerTLS | None) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tls is not None and scope["type"] in ("http", "websocket"):
            subject = self.tls.subject_of(scope)
            if subject:
                extensions = scope.setdefault("extensions", {}) or {}
                extensions["tls"] = {"client_cert_name": subject, "server_cert": None}
                scope["extensions"] = extensions
        await self.app(scope, receive, send)


def client_cert_name(scope: Scope) -> str | None:
    return ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_name")


def client_context(
    ca_bundle: str | None = None, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """A verifying client context: the system CAs or ``ca_bundle``; a client certificate for mutual TLS."""
    for name, f in (("CA bundle", ca_bundle), ("client certificate", certfile), ("client key", keyfile)):
        if f and not Path(f).is_file():
            raise ValueError(f"{name} {f} does not exist")
    if keyfile and not certfile:
        raise ValueError("a client key needs its client certificate (--client-cert)")
    ctx = ssl.create_default_context(cafile=ca_bundle or None)
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


def certificate_not_after(certfile: str) -> float | None:
    """Expiry (epoch seconds) of the first certificate in a PEM file, or None if it cannot be read.

    The ssl module's own decoder (what its test suite uses); no extra dependency for the client.
    """
    try:
        cert = ssl._ssl._test_decode_cert(certfile)
    except (AttributeError, ssl.SSLError, OSError):
        return None
    return ssl.cert_time_to_seconds(cert["notAfter"])


def explain_refusal(certfile: str | None) -> str:
    """Why a TLS server closed the connection right after the handshake without a word.

    With TLS 1.3 a server checks the client certificate after the client has finished its
    handshake, and asyncio/uvloop servers close without delivering their alert, so the client
    sees only an empty answer; this names the likely cause from what the client knows.
    """
    if not certfile:
        return (
            "the server closed the connection after the TLS handshake: it requires a client "
            "certificate (mutual TLS); pass --client-cert"
        )

    not_after = certificate_not_after(certfile)
    if not_after is not None and not_after < time.time():
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(not_after))
        return f"the server refused the client certificate {certfile}: it expired on {when}"
    return (
        f"the server refused the client certificate {certfile}: it is not issued by a CA the server "
        "trusts (its ssl_ca_certs), or not valid yet"
    )
