"""The seam every diarization engine sits behind, and the types that cross it.

An engine is loaded once (`load`), runs on a file in a worker thread (`run`, reporting how far it got
and stopping between blocks when asked), may embed a voice sample for known-speaker matching
(`embed`, None where it has no embeddings), says what memory it holds (`memory_bytes`) and lets go of
it (`unload`). Two engines: "resemblyzer" (offline, numpy, weights from PyPI; `offline.py`) and
"pyannote" (pyannote.audio's pipeline imported from a directory; `pyannote.py`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

#: engines by configuration name
ENGINES = ("resemblyzer", "pyannote")
#: most speakers a request may ask for
MAX_SPEAKERS = 32


class Stopped(Exception):
    """The run was asked to stop (cancel, drain, lost lease) between two blocks."""


class Unavailable(RuntimeError):
    """The configured engine cannot load here (weights not installed, package missing); says what to do."""


@dataclass(frozen=True)
class Params:
    """What a request may say about the speakers."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    #: seconds of decoded audio past which the file lied about its length at intake: the engine
    #: raises `audio.longer_than_declared` (an `errors.JobFailed`) instead of reading on
    max_seconds: float | None = None


@dataclass(frozen=True)
class Turn:
    """One stretch of one speaker's speech; `speaker` counts from 0 in order of first appearance."""

    start: float
    end: float
    speaker: int


@dataclass
class Result:
    """Turns plus one mean embedding per speaker (empty where the engine has none)."""

    turns: list[Turn]
    centroids: dict[int, np.ndarray]


Progress = Callable[[float], None]


class Engine(Protocol):
    """What the worker and the API need of a diarization engine."""

    name: str

    def run(self, path: Path, params: Params, on_progress: Progress, should_stop: Callable[[], bool]) -> Result:
        """Diarize a file (blocking); raises `Stopped` when `should_stop()` turns true."""
        ...

    def embed(self, wav: np.ndarray) -> np.ndarray | None:
        """A unit voice embedding of 16 kHz mono audio, or None where the engine has none."""
        ...

    def memory_bytes(self) -> int:
        """Memory the loaded engine holds, plus what a run adds at most."""
        ...

    def unload(self) -> None:
        """Let go of the weights."""
        ...


Loader = Callable[[], Engine]


class Holder:
    """The process's one engine, loaded on first use (thread-safe) and unloaded when idle.

    Like the Whisper models (`models.ModelCache`, ASR_MODEL_IDLE_TTL): a use runs between `acquire` and
    `release` (or inside `use()`); when the last use ends, the engine is unloaded after `idle_ttl`
    seconds without another (0: at once, -1: kept). The timer is a daemon thread, since uses run in
    worker threads as well as on the event loop.
    """

    def __init__(self, loader: Loader, idle_ttl: float = -1) -> None:
        self._loader = loader
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._ttl = idle_ttl
        self._in_use = 0
        self._last_used = 0.0
        self._timer: threading.Timer | None = None

    def get(self) -> Engine:
        """The loaded engine, loading it now if needed (blocking: call from a thread); no use is counted."""
        with self._lock:
            return self._load()

    def _load(self) -> Engine:
        if self._engine is None:
            t0 = time.perf_counter()
            self._engine = self._loader()
            log.info(
                "diarization_engine_loaded",
                extra={
                    "engine": self._engine.name,
                    "memory_mb": round(self._engine.memory_bytes() / (1 << 20), 1),
                    "load_s": round(time.perf_counter() - t0, 3),
                },
            )
        return self._engine

    def acquire(self) -> Engine:
        """The engine for one use, loaded if needed (blocking); pair with `release`."""
        with self._lock:
            engine = self._load()
            self._in_use += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return engine

    def release(self) -> None:
        """End one use; the last one unloads the engine now or arms the idle timer."""
        with self._lock:
            self._in_use = max(0, self._in_use - 1)
            self._last_used = time.monotonic()
            if self._in_use or self._engine is None or self._ttl < 0:
                return
            if self._ttl == 0:
                self._drop("idle")
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._ttl, self._expire)
            self._timer.daemon = True
            self._timer.start()

    @contextlib.contextmanager
    def use(self) -> Iterator[Engine]:
        """`acquire` … `release` around a block."""
        engine = self.acquire()
        try:
            yield engine
        finally:
            self.release()

    def _expire(self) -> None:
        with self._lock:
            self._timer = None
            if self._engine is not None and not self._in_use and time.monotonic() - self._last_used >= self._ttl - 0.05:
                self._drop("idle")

    def loaded(self) -> Engine | None:
        """The engine if loaded, without loading it."""
        return self._engine

    def unload(self) -> bool:
        """Unload the engine now (even mid-use: a run in progress keeps its reference); False when none was loaded."""
        with self._lock:
            if self._engine is None:
                return False
            self._drop("request")
            return True

    def _drop(self, reason: str) -> None:
        """Unload the engine (the lock is held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        engine, self._engine = self._engine, None
        if engine is None:
            return
        engine.unload()
        name = engine.name
        del engine
        gc.collect()
        log.info("diarization_engine_unloaded", extra={"engine": name, "reason": reason})


def speaker_label(index: int) -> str:
    """A, B, …, Z, AA, AB, … for speaker 0, 1, …"""
    label = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        label = chr(ord("A") + rem) + label
    return label
