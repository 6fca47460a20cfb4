"""Settings: secrets masked wherever settings are shown, and the values derived from them."""

from __future__ import annotations

import json
import os

import pytest

from asr_daemon.config import Settings
from asr_daemon.configdocs import masked


def test_masked_settings_hide_every_secret() -> None:
    """`configdocs.masked()` (what `asrctl config show` prints) contains no password, token or webhook key."""
    s = Settings(
        database_url="postgresql://asr:pg-Pa55word@db.example:5432/asr",  # type: ignore[arg-type]
        redis_url="redis://:redis-Pa55word@cache.example:6379/0",  # type: ignore[arg-type]
        webhook_secret="whsec-Topsecret",  # type: ignore[arg-type]
    )
    shown = json.dumps(masked(s), default=str)
    for secret in ("pg-Pa55word", "redis-Pa55word", "whsec-Topsecret"):
        assert secret not in shown
    assert masked(s)["database_url"] == "postgresql://asr:***@db.example:5432/asr"
    assert masked(s)["webhook_secret"] == "***"
    assert "pg-Pa55word" not in repr(s) and "pg-Pa55word" not in str(s.model_dump())


def test_keys_required_follows_the_listen_address() -> None:
    """auto: keys optional on loopback only; on/off override it."""
    assert not Settings(host="127.0.0.1").keys_required
    assert not Settings(host="::1").keys_required
    assert not Settings(host="localhost").keys_required
    assert Settings(host="0.0.0.0").keys_required
    assert Settings(host="192.168.1.20").keys_required
    assert Settings(host="asr.lan").keys_required
    assert Settings(host="127.0.0.1", auth="on").keys_required
    assert not Settings(host="0.0.0.0", auth="off").keys_required


def test_cpu_threads_split_the_cores_among_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """ASR_CPU_THREADS=0 gives each concurrent job its share of the cores (at least one); a number wins."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert Settings(workers=2).threads_per_worker() == 4
    assert Settings(workers=3).threads_per_worker() == 2
    assert Settings(workers=16).threads_per_worker() == 1
    assert Settings(workers=2, cpu_threads=6).threads_per_worker() == 6
