"""Orphan files in `uploads/`: what a crash leaves behind, swept at start and then every hour.

Two kinds exist. A file in `uploads/tmp/` is an upload cut off mid-body (`*.part`), a Wyoming voice
command's recording (`wyoming-*.wav`) or a known speaker's reference sample (`ref-*`) whose process
died before it could remove it. `uploads/<sha256>` with no job row is an upload killed between being
renamed into place and its job row being inserted. Nothing can reach either, so both are deleted,
but only once no request can still be using them: a temporary file is written to at least every
`ASR_UPLOAD_TIMEOUT` (or `ASR_WYOMING_TIMEOUT`) seconds while in use and then committed or removed,
so it must be unmodified for longer than that plus `GRACE_S`; a committed file gets
its row within the same locked step (milliseconds), so it must be older than `GRACE_S` and is
re-checked under that lock before it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from asr_daemon import queries
from asr_daemon.config import Settings
from asr_daemon.pipeline import uploads

log = logging.getLogger(__name__)

#: Seconds past the upload timeout before a `.part` counts as abandoned, and the age an unreferenced
#: committed file must reach before it is deleted.
GRACE_S = 3600.0
#: Seconds between two sweeps of a running daemon.
INTERVAL_S = 3600.0
SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")
BATCH = 1000


@dataclass
class Swept:
    """What one sweep removed."""

    parts: int = 0  # temporary files in uploads/tmp
    audio: int = 0


def _mtime(path: Path) -> float:
    """Modification time, or +inf when the file is gone (then it is never 'old')."""
    try:
        return path.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")


def _candidates(uploads_dir: Path, part_cutoff: float, audio_cutoff: float) -> tuple[list[Path], list[str]]:
    """Blocking: files in tmp/ modified before `part_cutoff`; hashes of audio modified before `audio_cutoff`."""
    parts: list[Path] = []
    shas: list[str] = []
    tmp = uploads_dir / "tmp"
    if tmp.is_dir():
        with os.scandir(tmp) as it:
            for e in it:
                old = _mtime(Path(e.path)) < part_cutoff
                if old and e.is_file(follow_symlinks=False):
                    parts.append(Path(e.path))
    if uploads_dir.is_dir():
        with os.scandir(uploads_dir) as it:
            for e in it:
                old = bool(SHA256_NAME.match(e.name)) and _mtime(Path(e.path)) < audio_cutoff
                if old and e.is_file(follow_symlinks=False):
                    shas.append(e.name)
    return parts, shas


async def sweep(settings: Settings, pool: asyncpg.Pool, locks: uploads.AudioLocks) -> Swept:
    """Delete abandoned temporary files and committed audio no job row refers to; returns the counts.

    Raises the database's errors (the caller logs them and tries again at the next sweep).
    """
    out = Swept()
    now = time.time()
    audio_cutoff = now - GRACE_S
    parts, shas = await asyncio.to_thread(
        _candidates,
        settings.uploads_dir,
        now - max(settings.upload_timeout, settings.wyoming_timeout) - GRACE_S,
        audio_cutoff,
    )
    for part in parts:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
            out.parts += 1
            log.info("orphan_part_removed", extra={"file": part.name})
    for i in range(0, len(shas), BATCH):
        batch = shas[i : i + BATCH]
        referenced = await queries.audio_referenced(pool, batch)
        for sha in batch:
            if sha in referenced:
                continue
            path = settings.uploads_dir / sha
            # intake holds this lock from renaming the file into place to inserting its row, and
            # touches a file it reuses: check again under it so a submission in flight keeps its audio
            async with locks.get(sha):
                if await queries.audio_referenced(pool, [sha]) or _mtime(path) >= audio_cutoff:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    out.audio += 1
                    log.info("orphan_audio_removed", extra={"sha256": sha[:12]})
    log.info("orphans_swept", extra={"parts": out.parts, "audio": out.audio})
    return out
