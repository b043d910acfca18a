"""API keys with identities: who a request comes from, and what it may do.

Two sources, used together:

- ``ECHOSEG_API_KEYS`` (the flat list of earlier versions): each key may do everything; its id is
  ``key-`` + the first 8 hex digits of its SHA-256, so logs and responses can name it without
  holding it.
- ``ECHOSEG_API_KEY_FILE``: a JSON file (a Kubernetes Secret mounted as a file) mapping each key id
  to the SHA-256 of the key and its scopes::

      {"keys": {"scanner-3": {"sha256": "9f86d0…", "scopes": ["stream"]},
                "pacs-bridge": {"sha256": "60303a…", "scopes": ["segment"]}}}

  The server only ever holds the digests. API keys are random and long (``echoseg keys new``
  makes 256-bit ones), so an unsalted SHA-256 cannot be reversed by guessing; a presented key is
  hashed and compared with every digest in constant time.

Scopes: ``segment`` (POST /v1/segment), ``stream`` (/v1/stream), ``read-metrics`` (GET /metrics
when ``protect_metrics`` is on). ``GET /v1/models`` needs a valid key of any scope.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from service.core.config import SCOPES

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> str:
    """SHA-256 of an API key, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def legacy_key_id(key: str) -> str:
    """The id of a key from the flat list: a hash prefix, never the key."""
    return f"key-{digest(key)[:8]}"


@dataclass(frozen=True)
class Principal:
    """Who a request or stream comes from: a key id, a client certificate's subject, or nobody."""

    kind: str  # "key" | "cert" | "none"
    id: str
    scopes: frozenset[str]
    sha256: str = field(default="", repr=False)  # key: its digest; cert: its fingerprint (revocation)

    @property
    def name(self) -> str:
        """What the audit trail and the logs call it (never the key itself)."""
        return {"key": self.id, "cert": f"cert:{self.id}"}.get(self.kind, "anonymous")


ANONYMOUS = Principal("none", "anonymous", frozenset(SCOPES))


@dataclass(frozen=True)
class KeyEntry:
    id: str
    sha256: str
    scopes: frozenset[str]


class KeyFileError(ValueError):
    """The key file is missing, not JSON, or has an invalid entry (the message says which)."""


class KeyRing:
    """The keys a server accepts at one moment; replaced whole when the key file changes.

    ``from_file``: a key file is configured. Authentication is then on whatever the file holds:
    a file with no keys (every key removed) lets nobody in, it never turns authentication off.
    """

    def __init__(self, entries: list[KeyEntry], from_file: bool = False) -> None:
        self.entries = entries
        self.from_file = from_file

    @classmethod
    def load(cls, api_keys: list[str], key_file: str = "") -> KeyRing:
        entries = [KeyEntry(legacy_key_id(k), digest(k), frozenset(SCOPES)) for k in api_keys]
        if key_file:
            entries += parse_key_file(Path(key_file))
        ids = [e.id for e in entries]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise KeyFileError(f"key ids must be unique; repeated: {dupes}")
        return cls(entries, from_file=bool(key_file))

    @property
    def enabled(self) -> bool:
        """Whether callers must authenticate: a key is configured, or a key file is (even an empty one)."""
        return bool(self.entries) or self.from_file

    @property
    def locked(self) -> bool:
        """A key file is configured and holds no key: nobody may call (and the server is not ready)."""
        return self.from_file and not self.entries

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal of a presented key, or None. Compares with every digest, no early exit."""
        if not presented:
            return None
        wanted = digest(presented)
        found = None
        for entry in self.entries:
            if hmac.compare_digest(wanted, entry.sha256):
                found = entry
        return None if found is None else Principal("key", found.id, found.scopes, found.sha256)

    def still_valid(self, principal: Principal, scope: str) -> bool:
        """Whether a key principal's key is still here, unchanged, with ``scope`` (for open streams)."""
        if principal.kind != "key":
            return True
        return any(
            e.id == principal.id and e.sha256 == principal.sha256 and scope in e.scopes for e in self.entries
        )


def parse_key_file(path: Path) -> list[KeyEntry]:
    """Read and check a key file; every problem names the file and the entry."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"api_key_file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"api_key_file {path} is not readable JSON: {type(exc).__name__}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, dict):
        raise KeyFileError(f'api_key_file {path}: expected {{"keys": {{"<key id>": {{...}}}}}}')
    entries = []
    for key_id, spec in keys.items():
        where = f"api_key_file {path}, key id {key_id!r}"
        if not _ID.match(key_id):
            raise KeyFileError(f"{where}: ids are 1-64 letters, digits, '.', '_', ':' or '-'")
        if not isinstance(spec, dict):
            raise KeyFileError(f'{where}: expected {{"sha256": "<64 hex>", "scopes": [...]}}')
        sha = spec.get("sha256")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise KeyFileError(f"{where}: sha256 must be 64 lower-case hex digits (echoseg keys new)")
        scopes = spec.get("scopes")
        if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
            raise KeyFileError(f"{where}: scopes must be a non-empty list of {list(SCOPES)}, got {scopes!r}")
        entries.append(KeyEntry(key_id, sha, frozenset(scopes)))
    return entries


def add_key(path: Path, key_id: str, key: str, scopes: list[str]) -> None:
    """Add (or replace) ``key_id`` in a key file, written atomically (a reader never sees half a file)."""
    if not _ID.match(key_id):
        raise ValueError(f"key id {key_id!r}: ids are 1-64 letters, digits, '.', '_', ':' or '-'")
    if not scopes or not all(s in SCOPES for s in scopes):
        raise ValueError(f"scopes must be a non-empty list of {list(SCOPES)}, got {scopes!r}")
    doc = {"keys": {}}
    if path.exists():
        parse_key_file(path)  # refuse to rewrite a broken file
        doc = json.loads(path.read_text(encoding="utf-8"))
    doc["keys"][key_id] = {"sha256": digest(key), "scopes": scopes}
    _write(path, doc)


def remove_key(path: Path, key_id: str) -> bool:
    """Remove ``key_id`` from a key file; False if it was not there."""
    parse_key_file(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc["keys"].pop(key_id, None) is None:
        return False
    _write(path, doc)
    return True


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
