"""The seam every diarization engine sits behind, and the types that cross it.

An engine is loaded once (`load`), runs on a file in a worker thread (`run`, reporting how far it got
and stopping between blocks when asked), may embed a voice sample for known-speaker matching
(`embed`, None where it has no embeddings), says what memory it holds (`memory_bytes`) and lets go of
it (`unload`). Two engines: "resemblyzer" (offline, numpy, weights from PyPI; `offline.py`) and
"pyannote" (pyannote.audio's pipeline imported from a directory; `pyannote.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
    """The process's one engine, loaded on first use (thread-safe) and unloaded on request."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def get(self) -> Engine:
        """The loaded engine, loading it now if needed (blocking: call from a thread)."""
        with self._lock:
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

    def loaded(self) -> Engine | None:
        """The engine if loaded, without loading it."""
        return self._engine

    def unload(self) -> bool:
        """Unload the engine; False when none was loaded."""
        with self._lock:
            if self._engine is None:
                return False
            self._engine.unload()
            self._engine = None
            return True


def speaker_label(index: int) -> str:
    """A, B, …, Z, AA, AB, … for speaker 0, 1, …"""
    label = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        label = chr(ord("A") + rem) + label
    return label
