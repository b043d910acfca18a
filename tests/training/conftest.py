"""Fixtures for the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _store_cache(tmp_path_factory, monkeypatch):
    """Frame stores prepared on first use go to a temporary folder, never to ~/.cache."""
    monkeypatch.setenv("ECHOSEG_CACHE", str(tmp_path_factory.getbasetemp() / "echoseg-cache"))
