"""A live session as a durable job: its row (kind `live`) and its audio file in `uploads/`.

The row is inserted `running`, owned by this process's live owner name, with one attempt spent. Its
audio is a 16 kHz mono WAV, `uploads/live-<job id hex>` (the name stands in `audio_sha256`),
appended as audio arrives; the header's sizes are rewritten on every flush and the file fsynced
on every commit, so after a crash it decodes up to the last flush. While the session lives, the
manager heartbeats the row; once it closes the row is completed (the statements: `queries.live`). If
the process dies, the reaper of the next start finds the stale heartbeat and queues the job: the worker
then resumes it like any file job from the end of its last stored segment, over the stored audio.
"""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path

from asr_daemon import jobs
from asr_daemon.live.codec import RATE
from asr_daemon.queries import Conn
from asr_daemon.queries import live as live_sql

HEADER = 44


def audio_name(job_id: uuid.UUID) -> str:
    """The file name (and `audio_sha256`) of a live job's audio."""
    return f"live-{job_id.hex}"


def _header(data_bytes: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class AudioFile:
    """The session's WAV, append-only. Every method blocks: call them off the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(self.fd, _header(0))
        self.data_bytes = 0

    def append(self, pcm: bytes) -> None:
        """Append 16-bit samples and rewrite the header's sizes (no fsync)."""
        if pcm:
            os.lseek(self.fd, 0, os.SEEK_END)
            os.write(self.fd, pcm)
            self.data_bytes += len(pcm)
        os.pwrite(self.fd, struct.pack("<I", 36 + self.data_bytes), 4)
        os.pwrite(self.fd, struct.pack("<I", self.data_bytes), 40)

    def sync(self) -> None:
        """Make what was appended durable."""
        os.fsync(self.fd)

    def close(self) -> None:
        """fsync and close."""
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1

    @property
    def seconds(self) -> float:
        """Audio stored so far."""
        return self.data_bytes / (2 * RATE)


async def create_job(
    conn: Conn, *, job_id: uuid.UUID, owner: str, model: str, options: jobs.Options, api_key_id: int | None,
    max_attempts: int,
) -> jobs.Job:  # fmt: skip
    """Insert the session's job, running and owned by `owner` (the statement: `queries.live`)."""
    return await live_sql.create_job(
        conn, job_id=job_id, owner=owner, model=model, options=options, api_key_id=api_key_id,
        max_attempts=max_attempts, audio_name=audio_name(job_id),
    )  # fmt: skip


heartbeat = live_sql.heartbeat
set_model = live_sql.set_model
finish = live_sql.finish
