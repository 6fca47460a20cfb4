"""The real daemon with the model cache wired in: preload reported by /readyz, /v1/models served."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import Daemon


def test_readyz_says_loading_while_the_default_model_preloads(make_daemon: Callable[..., Daemon]) -> None:
    """ASR_PRELOAD=true: /readyz answers 503 "loading base" until the model is in memory, then 200.

    The load begins before the app is imported, so it may be over by the first answer: then the 200
    must come after the load's `model_loaded` line."""
    d = make_daemon(start=False, ASR_MODEL="base", ASR_PRELOAD="true")
    d.start(wait_ready=False)
    seen: list[tuple[int, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(d.url + "/readyz", timeout=2)
            seen.append((r.status_code, r.json()["checks"]["model"]))
            if r.status_code == 200:
                ok_at = time.time()
                break
        time.sleep(0.02)
    assert seen[-1] == (200, "ok") and set(seen[:-1]) <= {(503, "loading base")}, seen
    loaded = next(json.loads(line) for line in d.logs().splitlines() if '"model_loaded"' in line)
    assert datetime.fromisoformat(loaded["ts"]).timestamp() <= ok_at
    with d.client() as c:
        body = c.get("/v1/models").json()
    base = next(m for m in body["data"] if m["id"] == "base")
    assert base["loaded"] is True and base["device"] == "cpu" and base["default"] is True


def test_model_load_and_unload_over_http(daemon: Daemon) -> None:
    """POST /v1/models/tiny.en/load then DELETE against the running daemon; absent models get 404."""
    with daemon.client() as c:
        assert c.post("/v1/models/tiny.en/load").json()["loaded"] is True
        assert c.delete("/v1/models/tiny.en").json()["loaded"] is False
        r = c.post("/v1/models/large-v3/load")
        assert r.status_code == 404 and "asrctl models pull large-v3" in r.json()["error"]["message"]


def test_a_foreground_daemon_says_once_where_it_serves(daemon: Daemon) -> None:
    """`asrctl serve` prints one human line once it serves: URL, model and device, /docs, how to stop;
    the rest of a non-terminal stderr stays JSON lines."""
    deadline = time.monotonic() + 10
    while "asr-server ready:" not in daemon.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = daemon.logs().splitlines()
    ready = [ln for ln in lines if ln.startswith("asr-server ready:")]
    assert len(ready) == 1, lines
    url = f"http://127.0.0.1:{daemon.port}"
    assert re.fullmatch(
        rf"asr-server ready: {url} · model tiny\.en on (cpu|cuda) \(\w+\) · API docs {url}/docs · Ctrl-C stops it",
        ready[0],
    ), ready[0]
    assert all(ln.startswith("{") for ln in lines if ln not in ready and ln.strip()), lines
    with daemon.client() as c:
        assert c.get("/docs").status_code == 200
