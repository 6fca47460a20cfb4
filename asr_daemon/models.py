"""Whisper models: the names we know, where they live on disk, and the ones loaded in memory.

A model is a CTranslate2 directory under `<state_dir>/models/<name>/` (config.json, model.bin,
tokenizer.json, vocabulary.*). Loading goes through `transcriber.load_model`; this module decides
which model to load and keeps the loaded ones.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_daemon import errors, store

# The store's names the rest of the daemon knows from here (the registry lives in `store`).
KNOWN = store.KNOWN
local_path = store.local_path
import_pypi_packages = store.import_pypi_packages

#: OpenAI model ids that mean "the configured default model".
DEFAULT_ALIASES = frozenset({"whisper-1", "default", ""})


def resolve(models_dir: Path, name: str | None, default: str) -> tuple[str, Path]:
    """Map a requested model name to (canonical name, directory), or raise `ModelNotFound`."""
    wanted = default if name is None or name in DEFAULT_ALIASES else name
    path = local_path(models_dir, wanted)
    if path is None:
        raise errors.ModelNotFound(wanted, known=wanted in KNOWN)
    return wanted, path


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


class ModelCache:
    """The models loaded in this process, each loaded once even under concurrent first requests."""

    def __init__(self, loader: Any) -> None:
        """`loader(name, path) -> Loaded` runs in a thread (it is blocking)."""
        self._loader = loader
        self._loaded: dict[str, Loaded] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.loading: set[str] = set()

    def loaded(self) -> list[Loaded]:
        """Models currently in memory."""
        return list(self._loaded.values())

    async def acquire(self, name: str, path: Path) -> Loaded:
        """The loaded model `name`, loading it first if needed; pair with `release`."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self._loaded.get(name)
            if entry is None:
                self.loading.add(name)
                try:
                    entry = await asyncio.to_thread(self._loader, name, path)
                finally:
                    self.loading.discard(name)
                self._loaded[name] = entry
            entry.in_use += 1
            entry.last_used = time.monotonic()
            return entry

    def release(self, entry: Loaded) -> None:
        """Mark one use of `entry` as finished."""
        entry.in_use -= 1
        entry.last_used = time.monotonic()

    def unload(self, name: str) -> bool:
        """Drop an idle model from memory; False if it is absent or in use."""
        entry = self._loaded.get(name)
        if entry is None or entry.in_use:
            return False
        del self._loaded[name]
        return True
