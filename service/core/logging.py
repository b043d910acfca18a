"""Keep secrets out of the logs: API keys in ``?token=`` and ``Authorization`` never reach a handler.

uvicorn's access log prints the path with its query string (REST and WebSocket), and the
websockets library prints request headers at DEBUG. :class:`RedactSecrets` rewrites every record
that passes a handler it is attached to: the value of a ``token`` (or ``access_token``,
``api_key``) query parameter, its name matched once percent-decoded as the server decodes it,
and of an ``Authorization`` header become ``<redacted>``.
:func:`install_redaction` attaches it to the root and uvicorn handlers and drops the
websockets library's per-header and per-frame DEBUG records, so headers are never printed.

Patient values: pydicom and highdicom quote the values they warn about (a non-standard birth
date, a caret-less name, a malformed UID). :class:`WithholdDicomValues` replaces the text of
every record from those libraries, logged or raised as a Python warning (captured into logging
by :func:`install_redaction`), by what kind of message it was.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "<redacted>"
SECRET_PARAMS = frozenset({"token", "access_token", "api_key", "apikey"})
# any name=value pair of a query string; the name is compared once percent-decoded (``%74oken``
# is ``token`` to the server, so it is to the redaction too)
_QUERY_PAIR = re.compile(r"((?:^|[?&;\s])([^=&;\s?\"']+)=)[^&;\s\"']*")
_AUTH_HEADER = re.compile(r"(authorization[\"']?\s*[:=,]\s*[\"']?)[^\"'\r\n)]*", re.IGNORECASE)
HEADER_LOGGERS = ("websockets", "websockets.server", "websockets.client", "httpcore", "hpack")
# What the websockets library logs at DEBUG (through uvicorn.error): one record per header and
# per frame (a frame's repr shows the first bytes of its payload: pixels). Dropped.
DROPPED_FORMATS = frozenset({"< %s: %s", "> %s: %s", "< %s", "> %s"})


def _param_name(raw: str) -> str:
    name = raw
    for _ in range(3):  # decoded as the server decodes it, and then some (double encoding)
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower()


def _redact_pair(match: re.Match) -> str:
    return match[1] + REDACTED if _param_name(match[2]) in SECRET_PARAMS else match[0]


def redact(text: str) -> str:
    """``text`` with query-string secrets and Authorization values replaced by ``<redacted>``."""
    return _AUTH_HEADER.sub(rf"\1{REDACTED}", _QUERY_PAIR.sub(_redact_pair, text))


class RedactSecrets(logging.Filter):
    """A handler filter: drops header and frame dumps, and redacts secrets from everything else.

    Each argument is redacted on its own first (uvicorn's access formatter needs its argument
    tuple intact); if the formatted message still holds a secret (split across arguments), the
    record is replaced by its redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in DROPPED_FORMATS:
            return False
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


def _redact_arg(arg):
    if isinstance(arg, int | float) or arg is None:
        return arg
    text = arg if isinstance(arg, str) else repr(arg)
    clean = redact(text)
    return arg if clean == text else clean


def install_redaction(*logger_names: str) -> None:
    """Attach :class:`RedactSecrets` and :class:`WithholdDicomValues` to the handlers of the root
    logger and of ``logger_names``; route Python warnings through logging (so they pass them too)."""
    logging.captureWarnings(True)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", *DICOM_LOGGERS, *logger_names):
        for handler in logging.getLogger(name).handlers:
            for kind in (RedactSecrets, WithholdDicomValues):
                if not any(isinstance(f, kind) for f in handler.filters):
                    handler.addFilter(kind())
    for name in HEADER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


# -- DICOM library messages ----------------------------------------------------------------------
DICOM_LOGGERS = ("pydicom", "highdicom")
_DICOM_SOURCE = re.compile(r"[/\\](pydicom|highdicom)[/\\]")  # a warning raised inside either library
_VR = re.compile(r"\bVR ([A-Z]{2})\b")
_TAG = re.compile(r"\(\s*[0-9A-Fa-f]{4}\s*,\s*[0-9A-Fa-f]{4}\s*\)")


class WithholdDicomValues(logging.Filter):
    """A handler filter: pydicom's and highdicom's messages, logged or warned, lose their text.

    Those libraries quote the values they find odd ("Invalid value for VR DA: '19620314'", "The
    string 'DOE JANE' is unlikely to represent the intended person name"): a birth date, a name,
    a study UID. Such a record keeps its level and origin and says what kind of message it was
    (the VR and the tag when it named them, which are not patient data); its text is withheld.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        library = _dicom_library(record)
        if library is None:
            return True
        try:
            text = record.getMessage()
        except Exception:
            text = ""
        hints = [f"VR {m}" for m in _VR.findall(text)[:1]] + _TAG.findall(text)[:1]
        kind = "warning" if record.name == "py.warnings" else "message"
        record.msg = f"a {library} {kind} withheld (it may quote patient values)" + (
            f" [{', '.join(hints)}]" if hints else ""
        )
        record.args = ()
        record.exc_info = record.exc_text = None
        return True


def _dicom_library(record: logging.LogRecord) -> str | None:
    root = record.name.split(".")[0]
    if root in DICOM_LOGGERS:
        return root
    if record.name == "py.warnings":  # logging.captureWarnings: the text starts with the file that warned
        found = _DICOM_SOURCE.search(str(record.args[0] if record.args else record.msg)[:500])
        return found.group(1) if found else None
    return None
