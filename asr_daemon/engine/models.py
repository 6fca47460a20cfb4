"""Whisper models in memory: load each once, unload it when idle or short of room.

Which model a request gets (`modelchoice.resolve`, `for_device`, the aliases: no faster-whisper import,
so start-up and intake use it without this module) is `asr_daemon.engine.modelchoice`; the store on
disk (registry, pull, import, checksums) is `asr_daemon.engine.store`. The API the worker and the app use:

- `cache_from_settings(settings) -> ModelCache`: the one cache of the process.
- `entry = await cache.acquire(name, path)` … `cache.release(entry)` around each job; `entry.model`
  is a `faster_whisper.WhisperModel`, with `entry.device` and `entry.compute_type`.
- Idle unload: `release` arms a timer of `ASR_MODEL_IDLE_TTL` seconds (0 unloads at once, -1 keeps).
- Room: before a load, least recently used idle models are unloaded until the new one fits the
  budget (`ASR_MODEL_MEMORY_BUDGET_MB`, sizes taken from model.bin) and the device's real free
  memory (MemAvailable on CPU, NVML/nvidia-smi on CUDA) less `ASR_MODEL_MEMORY_MARGIN_MB`. A model in
  use is never unloaded; when nothing more can go, the load goes ahead (logged `model_over_budget`).
- CUDA → CPU: a CUDA failure at load time falls back to the CPU inside `acquire`. At run time the
  worker does `if models.is_cuda_failure(exc) and cache.fallback_to_cpu(name, exc): retry the job`;
  the CUDA copies are dropped (when their jobs release them) and later loads go to the CPU. Each
  fallback logs one `model_cpu_fallback` warning and counts in `cache.stats()["cpu_fallbacks"]`.
- `cache.start_preload(name, path)`: load the default model in the background; `name` stays in
  `cache.loading` until it is ready, which `/readyz` reports as 503 "loading <name>". The app holds
  systemd's READY=1 back until the preload is over.
- `load_guard(name)`: an async context manager every load runs inside (the app's keeps sending
  EXTEND_TIMEOUT_USEC to systemd, `systemd.Lifecycle.extending`).
- `cache.unload(name)` (False when absent or in use), `cache.loaded()`, `cache.stats()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_daemon.config import Settings
from asr_daemon.engine import device, replicas, store

log = logging.getLogger(__name__)

# The names the rest of the daemon knows from here (the registry lives in `store`; which model a
# request gets is `modelchoice`'s, imported from there).
KNOWN = store.KNOWN
local_path = store.local_path
import_pypi_packages = store.import_pypi_packages
is_cuda_failure = device.is_cuda_failure

MB = 1 << 20


def estimate_bytes(path: Path) -> int:
    """Memory a model needs once loaded, from the size of its weights (an upper bound for int8)."""
    return (path / "model.bin").stat().st_size + 32 * MB


@dataclass
class Loaded:
    """A model in memory and how it is used."""

    name: str
    model: Any
    device: str
    compute_type: str
    load_seconds: float
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    size_bytes: int = 0  # what the budget counts (`estimate_bytes`)
    measured_bytes: int = 0  # heap (CPU) or VRAM (CUDA) growth seen during the load
    stale: bool = False  # CUDA failed under it: unload as soon as its jobs release it


#: `loader(name, path, device) -> Loaded`, blocking; device is "cuda" or "cpu".
Loader = Callable[[str, Path, str], Loaded]


def load_default(settings: Settings) -> Loaded | None:
    """Load the default model now, blocking, on the device the cache would pick (None: not on disk).

    The worker's early preload (`asr_daemon.startup`); a CUDA failure is raised for the cache to
    fall back on. Its heap/VRAM growth is measured here (the app's imports run meanwhile and count too).
    """
    path = local_path(settings.models_dir, settings.model)
    if path is None:
        return None
    dev = device.resolve_device(settings.device)
    before = _used(dev)
    entry = make_loader(settings)(settings.model, path, dev)
    entry.measured_bytes = max(0, _used(dev) - before)
    return entry


def make_loader(settings: Settings) -> Loader:
    """The real loader: faster-whisper on the given device with the configured compute type."""

    def load(name: str, path: Path, dev: str) -> Loaded:
        if dev == "cuda" and device.cuda_device_count() == 0:
            raise device.CudaFailure("no CUDA device visible to ctranslate2 (driver? libcublas.so.12?)")
        ctype = device.resolve_compute_type(settings.compute_type, dev)
        t0 = time.perf_counter()
        model = replicas.load_model(
            path, dev, ctype, settings.threads_per_worker(), settings.workers, settings.solo_threads()
        )
        return Loaded(name, model, dev, ctype, time.perf_counter() - t0)

    return load


def cache_from_settings(
    settings: Settings,
    load_guard: Callable[[str], contextlib.AbstractAsyncContextManager[Any]] = contextlib.nullcontext,
) -> ModelCache:
    """The process's model cache, configured from the settings; see `ModelCache` for `load_guard`."""
    return ModelCache(
        make_loader(settings),
        device=settings.device,
        idle_ttl=settings.model_idle_ttl,
        budget_bytes=settings.model_memory_budget_mb * MB,
        cpu_copies=2 if settings.solo_threads() else 1,
        margin_bytes=settings.model_memory_margin_mb * MB,
        cpu_fallback=settings.cpu_fallback,
        load_guard=load_guard,
    )


def _used(dev: str) -> int:
    """Memory in use on `dev`: this process's heap (RSS without glibc), or the GPU's total − free; 0 when unknown.

    On the CPU the heap in use, not RSS: a load after an unload reuses pages the process kept, so its
    RSS may not grow at all (measured: 0 bytes for tiny.en in the test suite, 52 MB of heap).
    """
    if dev == "cpu":
        heap = device.heap_bytes()
        return device.rss_bytes() if heap is None else heap
    v = device.vram()
    return v[1] - v[0] if v else 0


class ModelCache:
    """The models loaded in this process, each loaded once even under concurrent first requests."""

    def __init__(
        self,
        loader: Loader,
        *,
        device: str = "auto",
        idle_ttl: float = -1,
        budget_bytes: int = 0,
        margin_bytes: int = 0,
        cpu_fallback: bool = True,
        cpu_copies: int = 1,
        free_memory: Callable[[str], int | None] = device.free_memory,
        load_guard: Callable[[str], contextlib.AbstractAsyncContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        """`loader(name, path, device) -> Loaded` runs in a thread (it is blocking); each load runs
        inside `load_guard(name)` (the app passes systemd's EXTEND_TIMEOUT_USEC keep-alive)."""
        self._loader = loader
        self._device = device
        self._ttl = idle_ttl
        self._budget = budget_bytes
        self._margin = margin_bytes
        self._cpu_fallback = cpu_fallback
        self._cpu_copies = cpu_copies  # `Replicas`: a model on the CPU is loaded twice
        self._free_memory = free_memory
        self._guard = load_guard
        self._loaded: dict[str, Loaded] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._counts = {"loads": 0, "unloads": 0, "evictions": 0, "cpu_fallbacks": 0}
        self.loading: set[str] = set()
        self.cpu_only = False
        self._resolved: str | None = None
        self._adopted: dict[str, Future[Loaded | None]] = {}

    def adopt(self, name: str, future: Future[Loaded | None]) -> None:
        """Take over a load of `name` begun before the cache existed (`asr_daemon.startup`'s early
        preload): the first load of `name` waits for it instead of loading again, once. A failure it
        raises is the load's (a CUDA failure: the cache falls back to the CPU); a model it loaded on
        another device than the cache picks, or none (not on disk), is loaded again as usual."""
        self._adopted[name] = future

    def loaded(self) -> list[Loaded]:
        """Models currently in memory."""
        return list(self._loaded.values())

    def stats(self) -> dict[str, int]:
        """Counters for the metrics endpoint: loads, unloads, evictions, cpu_fallbacks, loaded."""
        return {**self._counts, "loaded": len(self._loaded)}

    def target_device(self) -> str:
        """The device the next load goes to (`auto` probed once per process: /readyz asks on every probe)."""
        if self.cpu_only:
            return "cpu"
        if self._resolved is None:
            self._resolved = device.resolve_device(self._device)
        return self._resolved

    async def acquire(self, name: str, path: Path) -> Loaded:
        """The loaded model `name`, loading it first if needed; pair with `release`."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self._loaded.get(name)
            if entry is not None and entry.stale:  # its jobs still hold it; they drop it on release
                del self._loaded[name]
                entry = None
            if entry is None:
                self.loading.add(name)
                try:
                    async with self._guard(name):
                        dev = await asyncio.to_thread(self.target_device)  # may import ctranslate2
                        size = estimate_bytes(path) * (self._cpu_copies if dev == "cpu" else 1)
                        await self._make_room(dev, size)
                        entry = await asyncio.to_thread(self._load, name, path, dev)
                finally:
                    self.loading.discard(name)
                entry.size_bytes = size
                self._loaded[name] = entry
                self._counts["loads"] += 1
            timer = self._timers.pop(name, None)
            if timer is not None:
                timer.cancel()
            entry.in_use += 1
            entry.last_used = time.monotonic()
            return entry

    def release(self, entry: Loaded) -> None:
        """Mark one use of `entry` as finished; unload it now or arm its idle timer."""
        entry.in_use -= 1
        entry.last_used = time.monotonic()
        if entry.in_use > 0:
            return
        if entry.stale:
            self._drop(entry, "stale")
        elif self._loaded.get(entry.name) is not entry:
            return
        elif self._ttl == 0:
            self._drop(entry, "idle")
        elif self._ttl > 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # released outside the event loop: no timer, the next acquire re-arms
                return
            self._timers[entry.name] = loop.call_later(self._ttl, self._expire, entry.name)

    def unload(self, name: str) -> bool:
        """Drop an idle model from memory; False if it is absent or in use."""
        entry = self._loaded.get(name)
        if entry is None or entry.in_use:
            return False
        self._drop(entry, "request")
        return True

    def fallback_to_cpu(self, name: str, exc: BaseException | None = None) -> bool:
        """After a CUDA failure while transcribing with `name`: send later loads to the CPU.

        Returns False when the CPU fallback is switched off (`ASR_CPU_FALLBACK=false`): the job fails.
        """
        if not self._cpu_fallback:
            return False
        self._note_fallback(name, "run", exc)
        for entry in list(self._loaded.values()):
            if entry.device != "cpu":
                entry.stale = True
                if not entry.in_use:
                    self._drop(entry, "stale")
        return True

    def start_preload(self, name: str, path: Path) -> asyncio.Task[None]:
        """Load `name` in the background now; it counts as loading (for /readyz) from this call on."""
        self.loading.add(name)

        async def preload() -> None:
            try:
                self.release(await self.acquire(name, path))
            except Exception:
                log.exception("model_preload_failed", extra={"model": name})
            finally:
                self.loading.discard(name)

        return asyncio.create_task(preload(), name=f"preload {name}")

    # --- internals -------------------------------------------------------------------------

    def _load(self, name: str, path: Path, dev: str) -> Loaded:
        """Run the loader (in a thread), falling back to the CPU on a CUDA failure."""
        before = _used(dev)
        try:
            entry = self._take_adopted(name, dev) or self._loader(name, path, dev)
        except Exception as exc:
            if dev == "cpu" or not self._cpu_fallback or not is_cuda_failure(exc):
                raise
            self._note_fallback(name, "load", exc)
            return self._load(name, path, "cpu")
        entry.measured_bytes = entry.measured_bytes or max(0, _used(dev) - before)  # an early load measured itself
        log.info(
            "model_loaded",
            extra={
                "model": name,
                "device": entry.device,
                "compute_type": entry.compute_type,
                "load_s": round(entry.load_seconds, 3),
                "measured_mb": entry.measured_bytes // MB,
            },
        )
        return entry

    def _take_adopted(self, name: str, dev: str) -> Loaded | None:
        """The adopted load of `name` (waited for, in the loading thread) if it fits `dev`; used once."""
        begun = self._adopted.pop(name, None)
        if begun is None:
            return None
        entry = begun.result()  # raises what the early load raised
        return entry if entry is not None and entry.device == dev else None

    def _note_fallback(self, name: str, phase: str, exc: BaseException | None) -> None:
        self.cpu_only = True
        self._counts["cpu_fallbacks"] += 1
        log.warning(
            "model_cpu_fallback",
            extra={"model": name, "phase": phase, "error": str(exc)[:300] if exc else None},
        )

    def _expire(self, name: str) -> None:
        self._timers.pop(name, None)
        entry = self._loaded.get(name)
        if entry is not None and not entry.in_use and time.monotonic() - entry.last_used >= self._ttl - 0.05:
            self._drop(entry, "idle")

    def _idle_lru(self, dev: str) -> Loaded | None:
        idle = [e for e in self._loaded.values() if not e.in_use and e.device == dev]
        return min(idle, key=lambda e: e.last_used) if idle else None

    async def _fits(self, dev: str, size: int) -> bool:
        if self._budget:
            resident = sum(e.size_bytes for e in self._loaded.values() if e.device == dev)
            if resident + size > self._budget:
                return False
        free = await asyncio.to_thread(self._free_memory, dev)  # NVML or nvidia-smi may take a while
        return free is None or free - self._margin >= size

    async def _make_room(self, dev: str, size: int) -> None:
        """Unload least recently used idle models on `dev` until a model of `size` bytes fits."""
        while not await self._fits(dev, size):
            victim = self._idle_lru(dev)
            if victim is None:
                log.warning("model_over_budget", extra={"device": dev, "needed_mb": size // MB})
                return
            self._counts["evictions"] += 1
            self._drop(victim, "evicted")

    def _drop(self, entry: Loaded, reason: str) -> None:
        """Remove `entry` from the cache and free its memory now (weights, then the C heap)."""
        if self._loaded.get(entry.name) is entry:  # a stale copy (CUDA → CPU) leaves its successor's timer be
            del self._loaded[entry.name]
            timer = self._timers.pop(entry.name, None)
            if timer is not None:
                timer.cancel()
        model, entry.model = entry.model, None
        if isinstance(model, replicas.Replicas):
            model.unload_model()  # both copies
        else:
            inner = getattr(model, "model", None)
            if inner is not None and hasattr(inner, "unload_model"):
                inner.unload_model()  # frees the weights even if a stray reference to `model` survives
            del inner
        del model
        gc.collect()
        device.trim_heap()
        self._counts["unloads"] += 1
        log.info("model_unloaded", extra={"model": entry.name, "device": entry.device, "reason": reason})
