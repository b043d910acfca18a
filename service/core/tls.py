"""TLS of the service: one server ``SSLContext`` that is reloaded in place, and client-certificate subjects.

uvicorn (>= 0.47) takes the context from ``ssl_context_factory``; the listening socket keeps that
object for every new handshake, so :meth:`ServerTLS.reload` calls ``load_cert_chain`` on the live
context: connections made after it get the new certificate, open ones (streams) keep theirs and
are never dropped. The CA bundle of mutual TLS is re-read the same way, but OpenSSL can only add
to a context's trust store: a CA removed from the bundle stays trusted until a restart.

uvicorn does not put the client certificate into the ASGI scope. :meth:`ServerTLS.protocol`
wraps its HTTP protocol class to note every live connection, by its address pair, with its
verified certificate's subject and fingerprint or with none; :class:`PeerCertificates` then adds
it to the scope as the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_name"]``,
RFC 4514), for REST and WebSocket alike. An identity belongs to the live connection only: a new
connection replaces the entry of its address pair (with or without a certificate), a closed one's
entry is dropped and never matched, so a client reusing the source port of a closed certificate
connection is not taken for it.

A client certificate chain is verified on the event loop, in the handshake: a client sending
a large junk chain made each refused handshake cost tens of ms of server CPU. The chain a client
may send is capped at ``ssl_max_client_chain_kb`` (OpenSSL's ``max_cert_list``, set through its
C API since Python's ``ssl`` does not expose it; see :func:`limit_client_chain`), so a larger
one is refused before it is parsed.

Revocation: ``ssl_client_denylist`` names a file of SHA-256 fingerprints of client certificates
that are refused (401), re-read with the other TLS files; open streams of a listed certificate
are closed by the service.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.config import Settings
from service.core.keys import Principal

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


_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
PRUNE_EVERY = 64  # connections: how often entries of closed connections are swept


@dataclass(frozen=True)
class Peer:
    """A verified client certificate of one live connection."""

    subject: str  # RFC 4514, most specific first
    sha256: str  # of the DER certificate, hex: what the deny-list names


def parse_denylist(path: Path) -> frozenset[str]:
    """SHA-256 fingerprints, one a line (colons and case ignored, ``#`` starts a comment)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"ssl_client_denylist {path}: not a readable text file ({exc})") from None
    found = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip().replace(":", "").lower()
        if not entry:
            continue
        if not _FINGERPRINT.match(entry):
            raise ValueError(
                f"ssl_client_denylist {path}, line {number}: expected a SHA-256 fingerprint "
                "(64 hex digits, e.g. from 'openssl x509 -noout -fingerprint -sha256')"
            )
        found.add(entry)
    return frozenset(found)


_SSL_CTRL_GET_MAX_CERT_LIST, _SSL_CTRL_SET_MAX_CERT_LIST = 50, 51  # openssl/ssl.h
OPENSSL_MAX_CERT_LIST = 100 * 1024  # OpenSSL's default


def limit_client_chain(context: ssl.SSLContext, max_bytes: int) -> bool:
    """Set OpenSSL's ``max_cert_list`` (the largest certificate chain a peer may send) on ``context``.

    Python's ``ssl`` has no setter, so ``SSL_CTX_ctrl`` of the libssl that ``_ssl`` is linked
    against is called on the context's ``SSL_CTX`` (the first field after the object header of
    CPython's ``PySSLContext``). The value read back first must be OpenSSL's default (or one set
    here before), else nothing is written and False is returned.
    """
    try:
        ctrl = ctypes.CDLL(ssl._ssl.__file__).SSL_CTX_ctrl
        ctrl.restype = ctypes.c_long
        ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    except (OSError, AttributeError, ValueError):
        return False
    if not ctx or ctrl(ctx, _SSL_CTRL_GET_MAX_CERT_LIST, 0, None) not in (OPENSSL_MAX_CERT_LIST, max_bytes):
        return False
    ctrl(ctx, _SSL_CTRL_SET_MAX_CERT_LIST, max_bytes, None)
    return ctrl(ctx, _SSL_CTRL_GET_MAX_CERT_LIST, 0, None) == max_bytes


class ServerTLS:
    """The server's certificate, key and (mutual TLS) CA bundle, as one live ``SSLContext``."""

    def __init__(self, settings: Settings) -> None:
        self.certfile = settings.ssl_certfile
        self.keyfile = settings.ssl_keyfile or None
        self.ca_certs = settings.ssl_ca_certs or None
        self.client_cert = settings.ssl_client_cert
        self.denylist = settings.ssl_client_denylist or None
        self.denied: frozenset[str] = frozenset()
        # (server host, server port, client host, client port) of each live connection -> (transport, Peer)
        self.peers: dict[tuple, tuple[object, Peer | None]] = {}
        self._made = 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load()
        self.context.verify_mode = VERIFY_MODES[self.client_cert]
        max_chain = int(settings.ssl_max_client_chain_kb * 1024)
        if self.client_cert != "none" and not limit_client_chain(self.context, max_chain):
            log.warning(
                "ssl_max_client_chain_kb not applied (this Python's ssl is not CPython's over OpenSSL): "
                "client certificate chains up to OpenSSL's default 100 KiB are verified"
            )

    @property
    def files(self) -> list[str]:
        return [f for f in (self.certfile, self.keyfile, self.ca_certs, self.denylist) if f]

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
        if self.denylist:
            denied = parse_denylist(Path(self.denylist))
            if denied != self.denied:
                log.info("client certificate deny-list: %d certificates", len(denied))
            self.denied = denied

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
        """``base`` (a uvicorn HTTP protocol class) noting each live connection's client certificate."""
        tls = self

        class PeerCertProtocol(base):
            def connection_made(self, transport) -> None:
                tls.note(transport)
                super().connection_made(transport)

            def connection_lost(self, exc) -> None:
                tls.forget(self.transport)
                super().connection_lost(exc)

        PeerCertProtocol.__name__ = f"PeerCert{base.__name__}"
        return PeerCertProtocol

    @staticmethod
    def _key(transport) -> tuple | None:
        sock, peer = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        return (sock[0], sock[1], peer[0], peer[1]) if sock and peer else None

    def note(self, transport) -> None:
        """A new connection: its certificate (or none) replaces whatever its address pair had."""
        key = self._key(transport)
        if key is None:
            return
        cert = transport.get_extra_info("peercert")  # {} or None unless verified
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if cert and ssl_object is not None else None
        peer = Peer(subject_name(cert), hashlib.sha256(der).hexdigest()) if der else None
        self._made += 1
        if self._made % PRUNE_EVERY == 0:  # connections upgraded to WebSocket end in another protocol
            for k in [k for k, (t, _) in self.peers.items() if t.is_closing()]:
                del self.peers[k]
        self.peers[key] = (transport, peer)

    def forget(self, transport) -> None:
        key = self._key(transport) if transport is not None else None
        if key is not None and self.peers.get(key, (None,))[0] is transport:
            del self.peers[key]

    def peer_of(self, scope: Scope) -> Peer | None:
        """The verified certificate of the live connection ``scope`` arrived on, if any."""
        server, client = scope.get("server"), scope.get("client")
        if not server or not client:
            return None
        transport, peer = self.peers.get((server[0], server[1], client[0], client[1]), (None, None))
        if transport is None or transport.is_closing():
            return None
        return peer

    def is_denied(self, peer: Peer) -> bool:
        return peer.sha256 in self.denied

    def revoked(self, principal: Principal) -> bool:
        """Whether a certificate principal's certificate is now on the deny-list (for open streams)."""
        return principal.kind == "cert" and principal.sha256 in self.denied


class PeerCertificates:
    """ASGI middleware: the ASGI TLS extension's ``client_cert_name`` for connections with a verified cert."""

    def __init__(self, app: ASGIApp, tls: ServerTLS | None) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tls is not None and scope["type"] in ("http", "websocket"):
            peer = self.tls.peer_of(scope)
            if peer is not None:
                extensions = scope.setdefault("extensions", {}) or {}
                extensions["tls"] = {"client_cert_name": peer.subject, "server_cert": None}
                scope["extensions"] = extensions
                scope.setdefault("state", {})[PEER_KEY] = peer
        await self.app(scope, receive, send)


PEER_KEY = "echoseg.client_cert"


def client_cert_name(scope: Scope) -> str | None:
    return ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_name")


def client_certificate(scope: Scope) -> Peer | None:
    """The verified client certificate of the connection (subject and fingerprint), if any."""
    return (scope.get("state") or {}).get(PEER_KEY)


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
