"""`thread_policy=replicas`: a lone transcription gets every core, overlapping ones share them."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from asr_daemon import jobs
from asr_daemon.config import Settings
from asr_daemon.engine import models, transcriber
from asr_daemon.engine.replicas import Replicas, load_model
from tests.conftest import JFK


@pytest.fixture(scope="module")
def replicas(models_dir: Path) -> Replicas:
    """tiny.en loaded as replicas: 2 threads alone, 2 workers of 1 thread for overlapping jobs."""
    loaded = load_model(models_dir / "tiny.en", "cpu", "int8", 1, 2, solo_threads=2)
    assert isinstance(loaded, Replicas)
    return loaded


def test_lone_lease_gets_solo_and_overlapping_ones_get_the_pool(replicas: Replicas) -> None:
    """The first lease takes the every-core copy; while it is held, others take the shared copy, even after it ends."""
    with replicas.lease() as first:
        assert first is replicas.solo
        with replicas.lease() as second:
            assert second is replicas.pool
            with replicas.lease() as third:
                assert third is replicas.pool
    with replicas.lease() as again:
        assert again is replicas.solo, "all released: the next lone one is fast again"
    outer = replicas.lease()
    assert outer.__enter__() is replicas.solo
    inner = replicas.lease()
    assert inner.__enter__() is replicas.pool
    outer.__exit__(None, None, None)
    with replicas.lease() as late:
        assert late is replicas.pool, "another transcription still runs: no second user of the solo copy"
    inner.__exit__(None, None, None)


def test_the_copies_have_the_threads_the_policy_gives(replicas: Replicas) -> None:
    """solo: one worker with every core; pool: one thread for each of the workers."""
    assert replicas.solo.model.num_workers == 1
    assert replicas.pool.model.num_workers == 2


def test_windowed_transcription_gives_the_same_text_on_either_copy(
    replicas: Replicas, speech: Callable[..., Path]
) -> None:
    """Whichever copy a window runs on, the transcript is the one the model gives (threads change speed only)."""
    clip = speech(JFK)
    options = jobs.Options(language="en", temperature=0.0)

    def text() -> str:
        out: list[transcriber.Segment] = []
        transcriber.transcribe(replicas, clip, options, on_segment=out.append)
        return "".join(s.text for s in out)

    alone = text()
    results: list[str] = []
    with replicas.lease():  # another job holds the solo copy: this one runs on the pool
        worker = threading.Thread(target=lambda: results.append(text()))
        worker.start()
        worker.join(120)
    assert results == [alone]
    assert "country" in alone.lower()


def test_forwarded_transcribe_lists_segments_and_releases(replicas: Replicas) -> None:
    """`Replicas.transcribe` (for callers that use the model directly) returns listed segments and frees its copy."""
    import numpy as np

    segments, info = replicas.transcribe(np.zeros(16000, dtype=np.float32), language="en")
    assert isinstance(segments, list)
    assert info.language == "en"
    with replicas.lease() as chosen:
        assert chosen is replicas.solo


def test_settings_choose_replicas_only_where_they_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """replicas: a solo copy with every core only when overlapping jobs would get fewer threads than that."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert Settings(workers=2).solo_threads() == 2
    assert Settings(workers=1).solo_threads() == 0, "one worker already has every core"
    assert Settings(workers=2, thread_policy="split").solo_threads() == 0
    assert Settings(workers=2, thread_policy="every-core").threads_per_worker() == 2
    assert Settings(workers=2, cpu_threads=2).solo_threads() == 0


def test_the_cache_counts_both_copies_against_the_budget(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model loaded as replicas reserves twice its estimate on the CPU, so the memory budget sees both copies."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    settings = Settings(device="cpu", workers=2, thread_policy="replicas", model_idle_ttl=-1)
    cache = models.cache_from_settings(settings)
    path = models_dir / "tiny.en"

    async def load() -> models.Loaded:
        entry = await cache.acquire("tiny.en", path)
        cache.release(entry)
        return entry

    entry = asyncio.run(load())
    try:
        assert isinstance(entry.model, Replicas)
        assert entry.size_bytes == 2 * models.estimate_bytes(path)
    finally:
        assert cache.unload("tiny.en")
