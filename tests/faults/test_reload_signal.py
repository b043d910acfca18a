"""SIGHUP on a real ``echoseg serve``: the key file is re-read at once, the process keeps serving."""

from __future__ import annotations

import os
import signal
import time

import httpx

from service.core.keys import add_key
from tests.sensitive import KEYS


def test_sighup_reloads_the_key_file(served, tmp_path):
    keys = tmp_path / "keys.json"
    add_key(keys, "scanner-3", KEYS["scanner"], ["stream"])
    # a poll interval of an hour: only the signal can make the server see the new key
    server = served(ECHOSEG_API_KEY_FILE=str(keys), ECHOSEG_RELOAD_INTERVAL_S="3600")

    def status(key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.get(f"{server.url}/v1/models", headers=headers, timeout=10).status_code

    assert status(KEYS["scanner"]) == 200 and status(KEYS["late"]) == 401
    add_key(keys, "late-scanner", KEYS["late"], ["stream"])
    time.sleep(0.5)
    assert status(KEYS["late"]) == 401, "not re-read before the signal"
    sent = time.monotonic()
    os.kill(server.pid, signal.SIGHUP)
    while status(KEYS["late"]) != 200:
        assert time.monotonic() - sent < 10, "SIGHUP did not reload the key file within 10 s"
        time.sleep(0.02)
    took = time.monotonic() - sent
    assert server.process.poll() is None and status(KEYS["scanner"]) == 200
    assert "keys reloaded: 2 keys" in server.log()
    print(f"SIGHUP -> new key accepted after {took * 1e3:.0f} ms")
