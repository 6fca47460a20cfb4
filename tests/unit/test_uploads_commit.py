"""Storing an upload: the rename into uploads/ is made durable before the caller commits the job row."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from asr_daemon import checksums
from asr_daemon.pipeline import uploads


def _upload(tmp: Path, data: bytes) -> uploads.Upload:
    part = tmp / "x.part"
    part.write_bytes(data)
    return uploads.Upload(path=part, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def test_commit_fsyncs_the_directory_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The uploads directory is fsynced once the file is in place (so a committed row never outlives a
    power loss that undid the rename); a reused file needs no new sync."""
    store, tmp = tmp_path / "uploads", tmp_path / "tmp"
    store.mkdir()
    tmp.mkdir()
    synced: list[tuple[Path, bool]] = []
    real = checksums.fsync

    def spy(path: Path) -> None:  # records what was on disk at the time of the sync, then syncs for real
        synced.append((path, any(store.iterdir())))
        real(path)

    monkeypatch.setattr(checksums, "fsync", spy)
    up = _upload(tmp, b"RIFF audio")
    final, created = uploads.commit(up, store)
    assert created and final.read_bytes() == b"RIFF audio" and up.path is None
    assert synced == [(store, True)]
    again = _upload(tmp, b"RIFF audio")
    assert uploads.commit(again, store) == (final, False)
    assert synced == [(store, True)] and not any(tmp.iterdir())
