"""Diarization in a job's event stream: `diarization` progress events (with the id of `started`, since
they come between it and the first segment) and the speaker of each `segment` event."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from asr_daemon import jobs
from asr_daemon.diarization import render, store
from asr_daemon.queries import Conn

if TYPE_CHECKING:
    from asr_daemon.pipeline.events import Event


@dataclass(frozen=True, slots=True)
class SpeakerTime:
    """One speaker of a diarized job: its label (`A`, `B`, ...), display name and seconds of speech."""

    label: str
    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class SpeakerSummary:
    """A job's diarization for people (API job view, `asrctl jobs show`)."""

    status: str
    engine: str
    progress_s: float
    num_speakers: int | None
    speakers: tuple[SpeakerTime, ...]


class Follower:
    """What one event stream has told about a job's diarization so far."""

    def __init__(self, pool: asyncpg.Pool, job_id: uuid.UUID) -> None:
        self.pool = pool
        self.job_id = job_id
        self._last: tuple[str, float] | None = None
        self._speakers: render.Speakers | None = None

    @staticmethod
    def wanted(job: jobs.Job) -> bool:
        """True when the job was submitted with diarization."""
        return job.diarized

    async def progress(self, job: jobs.Job) -> Event | None:
        """A `diarization` event when the step's state moved since the last one; None otherwise."""
        from asr_daemon.pipeline.events import Event

        if not self.wanted(job):
            return None
        row = await store.state(self.pool, self.job_id)
        if row is None:
            return None
        status = shown_status(row["status"], job.status)
        now = (status, round(row["progress_s"], 1))
        if now == self._last:
            return None
        self._last = now
        duration = job.duration_s or 0.0
        data: dict[str, object] = {
            "id": str(self.job_id),
            "status": status,
            "progress_s": round(row["progress_s"], 3),
            "progress": round(min(1.0, row["progress_s"] / duration), 4) if duration else None,
        }
        if row["status"] == "done":
            data["num_speakers"] = row["num_speakers"]
        return Event(1, "diarization", data)

    async def speakers(self, job: jobs.Job) -> render.Speakers | None:
        """The job's speakers once its turns are stored (names re-read each time: they may be renamed)."""
        if not self.wanted(job):
            return None
        self._speakers = await render.speakers_of(self.pool, self.job_id)
        return self._speakers if self._speakers.turns else None


def shown_status(step: str, job: jobs.Status) -> str:
    """The step's status as told: "running" only while its job runs. A job cancelled, failed or handed
    back mid-step leaves its row `running` (the next run begins it again): that step has "stopped"."""
    return "stopped" if step == "running" and job != jobs.Status.RUNNING else step


async def summary(conn: Conn, job: jobs.Job) -> SpeakerSummary | None:
    """A job's diarization for people (API job view, `asrctl jobs show`); None when it has none."""
    job_id = job.id
    row = await store.state(conn, job_id)
    if row is None:
        return None
    sp = await render.speakers_of(conn, job_id)
    return SpeakerSummary(
        status=shown_status(row["status"], job.status),
        engine=row["engine"],
        progress_s=round(row["progress_s"], 3),
        num_speakers=row["num_speakers"],
        speakers=_talk(sp),
    )


def _talk(sp: render.Speakers) -> tuple[SpeakerTime, ...]:
    """Each speaker's label, name and seconds of speech, by label."""
    talk: dict[int, float] = {}
    for t in sp.turns:
        talk[t.speaker] = talk.get(t.speaker, 0.0) + t.end - t.start
    return tuple(SpeakerTime(render.speaker_label(k), sp.name(k), round(v, 3)) for k, v in sorted(talk.items()))


async def webhook_fields(pool: asyncpg.Pool, job: jobs.Job) -> dict[str, object]:
    """`speakers` for a diarized job's webhook: each label with its name and seconds of speech."""
    if not Follower.wanted(job):
        return {}
    sp = await render.speakers_of(pool, job.id)
    return {"speakers": [dataclasses.asdict(t) for t in _talk(sp)]}
