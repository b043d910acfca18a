"""Keep secrets out of the logs: API keys in ``?token=`` and ``Authorization`` never reach a handler.

uvicorn's access log prints the path with its query string (REST and WebSocket), and the
websockets library prints request headers at DEBUG. :class:`RedactSecrets` rewrites every record
that passes a handler it is attached to: the value of a ``token`` (or ``access_token``,
``api_key``) query parameter and of an ``Authorization`` header become ``<redacted>``.
:func:`install_redaction` attaches it to the root and uvicorn handlers and keeps the loggers
that print raw headers at INFO or above, so headers are never printed.
"""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"
_QUERY_SECRET = re.compile(r"((?:^|[?&;\s])(?:token|access_token|api_key|apikey)=)[^&;\s\"']*", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(authorization[\"']?\s*[:=,]\s*[\"']?)[^\"'\r\n)]*", re.IGNORECASE)
HEADER_LOGGERS = ("websockets", "websockets.server", "websockets.client", "httpcore", "hpack")


def redact(text: str) -> str:
    """``text`` with query-string secrets and Authorization values replaced by ``<redacted>``."""
    return _AUTH_HEADER.sub(rf"\1{REDACTED}", _QUERY_SECRET.sub(rf"\1{REDACTED}", text))


class RedactSecrets(logging.Filter):
    """A handler filter: rewrites the message and its arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def _redact_arg(arg):
    if isinstance(arg, int | float) or arg is None:
        return arg
    text = arg if isinstance(arg, str) else repr(arg)
    clean = redact(text)
    return arg if clean == text else clean


def install_redaction(*logger_names: str) -> None:
    """Attach :class:`RedactSecrets` to the handlers of the root logger and of ``logger_names``."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", *logger_names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
    for name in HEADER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
