"""The viewer: relative redirects whatever the Host header says, and a strict CSP it can live with."""

from __future__ import annotations

import re

import httpx

from service.main import VIEWER_DIR


def test_the_viewer_redirect_ignores_the_host_header(fake):
    server = fake()
    resp = httpx.get(f"{server.url}/viewer", headers={"Host": "evil.example"}, timeout=10)
    assert resp.is_redirect
    assert resp.headers["location"] == "/viewer/", resp.headers["location"]


def test_the_viewer_sends_its_security_headers(fake):
    server = fake()
    for path in ("/viewer/", "/viewer/viewer.js", "/viewer/viewer.css", "/viewer/missing.txt", "/viewer"):
        headers = httpx.get(f"{server.url}{path}", timeout=10).headers
        csp = headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, (path, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers.get("x-content-type-options") == "nosniff", path
        assert headers.get("referrer-policy") == "no-referrer", path
        assert headers.get("x-frame-options") == "DENY", path
    assert "content-security-policy" not in httpx.get(f"{server.url}/healthz", timeout=10).headers


def test_the_viewer_page_needs_no_inline_script_or_style():
    html = (VIEWER_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", html, re.I)
