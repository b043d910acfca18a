"""Units of the bounded-memory paths: the chunked read-outs equal the whole-clip ones; redaction."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from echoseg.cardiac import area_curve, summarize_areas, summarize_clip
from service.codecs.rle import rle_area, rle_decode, rle_encode
from service.core.logging import REDACTED, RedactSecrets, redact

from .conftest import moving_disc_clip


@pytest.mark.parametrize("fps", [None, 25.0])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.3, 0.5)])
def test_summarize_areas_equals_summarize_clip(fps, spacing):
    masks = (moving_disc_clip(60, 40, 48) > 120).astype(np.uint8)  # (T, H, W) beating disc
    areas = area_curve(masks, spacing)
    fetched = []

    def mask_at(i: int) -> np.ndarray:
        fetched.append(i)
        return masks[i]

    ours = summarize_areas(areas, mask_at, spacing, fps).to_dict()
    assert ours == summarize_clip(masks, spacing, fps).to_dict()
    assert ours["beats"] and len(set(fetched)) <= len(ours["ed_frames"]) + len(ours["es_frames"])


def test_rle_counts_are_int64_and_give_the_area():
    rng = np.random.default_rng(0)
    for mask in [rng.integers(0, 2, (7, 9)), np.ones((3, 4)), np.zeros((3, 4)), np.eye(5)]:
        counts = rle_encode(np.asarray(mask, np.uint8))
        assert counts.dtype == np.int64 and counts.sum() == mask.size
        assert rle_area(counts) == int(np.count_nonzero(mask))
        np.testing.assert_array_equal(rle_decode(counts.tolist(), *mask.shape), mask != 0)


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1:5 - "GET /v1/stream?token=s3cret HTTP/1.1" 101',
        "GET /v1/models?a=1&token=s3cret&b=2",
        "< authorization: Bearer s3cret",
        "{'Authorization': 'Bearer s3cret'}",
    ],
)
def test_redact(line):
    out = redact(line)
    assert "s3cret" not in out and REDACTED in out


def test_redaction_filter_keeps_access_log_arguments():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/models?token=s3cret", "1.1", 200), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5  # uvicorn's formatter unpacks them
    assert "s3cret" not in record.getMessage()
    header = logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, "< %s: %s",
                               ("authorization", "Bearer s3cret"), None)  # fmt: skip
    assert not RedactSecrets().filter(header)  # header dumps are dropped
