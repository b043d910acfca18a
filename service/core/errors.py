"""Domain errors of the service and the one table that maps them to HTTP statuses and WebSocket closes.

Library code raises :class:`ServiceError` subclasses (or plain ``ValueError`` from decoding, which
the REST route turns into ``corrupt_input``); the REST exception handler and the WebSocket
session both read :data:`ERRORS`, so a code means the same thing on both transports and in the
``echoseg_errors_total{code}`` metric. docs/service.md lists the same table for clients.

A detail is cut to :data:`MAX_DETAIL_CHARS` here, once for every error: details quote what the
client sent (a field's value, a type name), and a client must not be able to make an error
message, and so the answer and the log line that carry it, as large as its input.
"""

from __future__ import annotations

from dataclasses import dataclass

# WebSocket close codes (RFC 6455 §7.4.1).
WS_NORMAL = 1000
WS_GOING_AWAY = 1001
WS_UNSUPPORTED_DATA = 1003
WS_POLICY = 1008
WS_TOO_BIG = 1009
WS_INTERNAL = 1011
WS_TRY_AGAIN = 1013
MAX_DETAIL_CHARS = 300  # an error detail is cut to this many characters (what it quotes, mostly)


@dataclass(frozen=True)
class ErrorSpec:
    http_status: int
    ws_close: int
    meaning: str


ERRORS: dict[str, ErrorSpec] = {
    # request / upload
    "empty_body": ErrorSpec(400, WS_UNSUPPORTED_DATA, "the request carried no clip"),
    "invalid_request": ErrorSpec(422, WS_UNSUPPORTED_DATA, "a parameter or form field is missing or invalid"),
    "unsupported_media_type": ErrorSpec(
        415, WS_UNSUPPORTED_DATA, "the Content-Type is not a supported clip format"
    ),
    "body_timeout": ErrorSpec(
        408, WS_POLICY, "the body did not arrive within body_timeout_s, or stalled for body_idle_timeout_s"
    ),
    "corrupt_input": ErrorSpec(422, WS_UNSUPPORTED_DATA, "the clip could not be decoded"),
    "invalid_metadata": ErrorSpec(
        422,
        WS_UNSUPPORTED_DATA,
        "a number in the file (frame rate, spacing) is not finite or out of range, or a value a DICOM "
        "output needs (a UID, the pixel size) is missing",
    ),
    "payload_too_large": ErrorSpec(413, WS_TOO_BIG, "the body is larger than max_upload_mb"),
    "answer_too_large": ErrorSpec(
        413, WS_TOO_BIG, "the JSON answer would pass max_json_mb; ask for output=npz (or a shorter clip)"
    ),
    "too_many_frames": ErrorSpec(413, WS_TOO_BIG, "the clip has more frames than max_frames"),
    "dimensions_too_large": ErrorSpec(413, WS_TOO_BIG, "frame width/height above the configured limit"),
    # stream protocol
    "invalid_json": ErrorSpec(400, WS_UNSUPPORTED_DATA, "a text message is not a JSON object"),
    "unknown_message_type": ErrorSpec(
        400, WS_UNSUPPORTED_DATA, "a JSON message has an unknown or missing type"
    ),
    "invalid_start": ErrorSpec(400, WS_UNSUPPORTED_DATA, "the start message has a missing or invalid field"),
    "binary_before_start": ErrorSpec(400, WS_UNSUPPORTED_DATA, "a binary frame arrived before start"),
    "expected_binary": ErrorSpec(
        400, WS_UNSUPPORTED_DATA, "a text message arrived where a binary frame was expected"
    ),
    "wrong_frame_size": ErrorSpec(
        400, WS_UNSUPPORTED_DATA, "a gray8 frame's byte length is not width*height"
    ),
    "corrupt_frame": ErrorSpec(400, WS_UNSUPPORTED_DATA, "a png/jpeg frame could not be decoded"),
    "wrong_frame_dimensions": ErrorSpec(
        400, WS_UNSUPPORTED_DATA, "a decoded frame's size differs from start"
    ),
    "frame_too_large": ErrorSpec(
        413, WS_TOO_BIG, "a binary message is larger than a frame can be, or a text message above 64 KiB"
    ),
    "start_timeout": ErrorSpec(408, WS_POLICY, "no start message within stream_start_timeout_s"),
    "idle_timeout": ErrorSpec(
        408,
        WS_POLICY,
        "a started stream sent no valid frame for stream_idle_timeout_s, or fewer than stream_min_fps",
    ),
    # capacity, lifecycle, security
    "unauthorized": ErrorSpec(
        401, WS_POLICY, "missing or wrong API key (or client certificate), or the stream's key was revoked"
    ),
    "forbidden": ErrorSpec(403, WS_POLICY, "the key (or certificate) lacks the scope this route needs"),
    "overloaded": ErrorSpec(503, WS_TRY_AGAIN, "the server cannot keep up; slow down or retry later"),
    "too_many_streams": ErrorSpec(503, WS_TRY_AGAIN, "max_streams streams are already open"),
    "not_ready": ErrorSpec(503, WS_TRY_AGAIN, "the model is not loaded yet"),
    "shutting_down": ErrorSpec(503, WS_GOING_AWAY, "the server is draining before shutdown"),
    "not_found": ErrorSpec(404, WS_POLICY, "no such route"),
    "head_too_large": ErrorSpec(
        431, WS_POLICY, "the request head is larger than max_head_kb or has more than max_headers lines"
    ),
    "head_timeout": ErrorSpec(408, WS_POLICY, "the request head did not arrive within head_timeout_s"),
    "drain_timeout": ErrorSpec(
        503, WS_GOING_AWAY, "the work was still running when the shutdown drain timed out; retry elsewhere"
    ),
    "method_not_allowed": ErrorSpec(405, WS_POLICY, "the route does not take this HTTP method"),
    "client_closed": ErrorSpec(
        499, WS_GOING_AWAY, "the client went away before the answer (counted, never a server error)"
    ),
    "internal": ErrorSpec(500, WS_INTERNAL, "an unexpected server error"),
}


class ServiceError(Exception):
    """An error a client caused or must know about; ``code`` is a key of :data:`ERRORS`."""

    def __init__(self, code: str, detail: str) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}; valid codes: {sorted(ERRORS)}")
        detail = shorten(detail)
        super().__init__(detail)
        self.code = code
        self.detail = detail

    @property
    def http_status(self) -> int:
        return ERRORS[self.code].http_status

    @property
    def ws_close(self) -> int:
        return ERRORS[self.code].ws_close

    def payload(self) -> dict[str, str]:
        return {"type": "error", "code": self.code, "detail": self.detail}


def shorten(detail: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``detail`` cut to ``limit`` characters, saying how long it was (a quoted value may be huge)."""
    if len(detail) <= limit:
        return detail
    return f"{detail[:limit]}... (cut; {len(detail)} characters in all)"
