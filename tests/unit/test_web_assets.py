"""The page's files as shipped in the package: small, self-contained, no inline code, no HTML injection."""

from __future__ import annotations

import re

from asr_daemon.web import routes


def test_the_page_weighs_at_most_200_kb_and_every_reference_is_served() -> None:
    """All files together stay under 200 KB before compression, and every /static/ path that the HTML,
    the CSS and the modules name is a file the router serves."""
    assets = routes.load()
    assert sum(len(a.body) for a in assets.values()) <= 200_000
    named: set[str] = set()
    for name, asset in assets.items():
        text = asset.body.decode()
        named |= set(re.findall(r"/static/([\w./-]+)", text))
        if name.endswith(".js"):
            base = name.rsplit("/", 1)[0]
            named |= {f"{base}/{m}" for m in re.findall(r"from \"\./([\w.-]+)\"", text)}
    assert named and named <= set(assets), named - set(assets)


def test_no_inline_code_no_cdn_and_no_html_injection() -> None:
    """index.html has no inline script or style (the CSP forbids them); nothing is loaded from another
    host; no script builds DOM from HTML strings (user data would become markup)."""
    assets = routes.load()
    html = assets["index.html"].body.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\sstyle=|<style|\son\w+=", html)
    for name, asset in assets.items():
        text = asset.body.decode(errors="replace")
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        if name.endswith(".js"):
            assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(", text), name


def test_the_policy_allows_no_inline_or_foreign_code() -> None:
    """The Content-Security-Policy sent with the page: only its own origin, no 'unsafe-*'."""
    assert "default-src 'self'" in routes.CSP and "script-src 'self'" in routes.CSP
    assert "unsafe" not in routes.CSP and "object-src 'none'" in routes.CSP
