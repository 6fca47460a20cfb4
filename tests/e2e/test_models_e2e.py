"""The real daemon with the model cache wired in: preload reported by /readyz, /v1/models served."""

from __future__ import annotations

import contextlib
import json
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
