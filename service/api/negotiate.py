"""Choose an answer's media type from the request's ``Accept`` header (RFC 9110 §12.5.1).

Each offered type takes the quality of the most specific media range that matches it (``a/b``
before ``a/*`` before ``*/*``); the best quality wins, and a tie goes to the type offered first.
A missing header, or one that accepts none of the offered types, gets the first: the service
answers in its own type rather than with 406.
"""

from __future__ import annotations

MAX_RANGES = 32  # an Accept header longer than this is read up to here


def _ranges(accept: str) -> list[tuple[str, float]]:
    """``'a/b;q=0.5, */*'`` -> ``[('a/b', 0.5), ('*/*', 1.0)]`` (malformed entries skipped)."""
    out = []
    for item in accept.split(",")[:MAX_RANGES]:
        media, *params = (part.strip() for part in item.split(";"))
        if media.count("/") != 1:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        out.append((media.lower(), q))
    return out


def _quality(media: str, ranges: list[tuple[str, float]]) -> float:
    kind = media.split("/")[0] + "/*"
    for candidate in (media, kind, "*/*"):  # the most specific range that names it
        qs = [q for r, q in ranges if r == candidate]
        if qs:
            return max(qs)
    return 0.0


def preferred(accept: str | None, offered: tuple[str, ...]) -> str:
    """The type of ``offered`` that ``accept`` prefers; ``offered[0]`` when it prefers none."""
    ranges = _ranges(accept or "")
    if not ranges:
        return offered[0]
    best, best_q = offered[0], 0.0
    for media in offered:
        q = _quality(media, ranges)
        if q > best_q:
            best, best_q = media, q
    return best
