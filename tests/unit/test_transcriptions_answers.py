"""How /v1/audio/* ends an accepted job's answer: the stream's last event when following stops early, and
failed jobs' answers the openai SDK must not retry (api/transcriptions.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asr_daemon import errors
from asr_daemon.api import transcriptions
from asr_daemon.pipeline import events

JOB = uuid.UUID(int=7)


async def drain(follow: Any, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Everything `_stream` sends for JOB when `events.follow` behaves as `follow` (a stand-in for its end)."""
    monkeypatch.setattr(events, "follow", follow)
    return [item async for item in transcriptions._stream(None, None, JOB)]  # type: ignore[arg-type]  # unused


async def test_a_database_outage_mid_stream_ends_with_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """follow gives up on PostgreSQL: a keep-alive, then an `error` naming the stored job, not a cut connection."""

    async def follow(*_: object) -> AsyncIterator[events.Event | None]:
        yield None
        raise ConnectionRefusedError("PostgreSQL is down")

    sent = await drain(follow, monkeypatch)
    assert sent[0] is transcriptions.KEEP_ALIVE
    last = json.loads(str(sent[-1]))
    assert last["type"] == "error" and last["error"]["code"] == "unavailable" and str(JOB) in last["error"]["message"]


async def test_a_stream_that_stops_before_the_end_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """follow returns without a final event (job deleted, shutdown): the SDK gets an `error` to raise."""

    async def follow(*_: object) -> AsyncIterator[events.Event | None]:
        yield events.Event(0, "queued", {"id": str(JOB)})

    (only,) = await drain(follow, monkeypatch)
    assert json.loads(str(only))["error"]["code"] == "interrupted"


@pytest.mark.parametrize(
    ("exc", "code"), [(events.Stopping(JOB), "server_stopping"), (events.Lost(JOB), "unavailable")]
)
async def test_a_stream_ended_by_a_stop_or_a_long_outage_says_where_to_resume(
    exc: errors.AsrError, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stopping or PostgreSQL staying away ends the stream with an `error` naming the job's URL."""

    async def follow(*_: object) -> AsyncIterator[events.Event | None]:
        yield None
        raise exc

    last = json.loads(str((await drain(follow, monkeypatch))[-1]))
    assert last["error"]["code"] == code and f"/v1/jobs/{JOB}" in last["error"]["message"]


async def test_a_cancelled_stream_carries_an_error_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """The final `cancelled` event becomes an `error` event with an `error` object (the SDK raises on it)."""

    async def follow(*_: object) -> AsyncIterator[events.Event | None]:
        yield events.Event(2, "cancelled", {"id": str(JOB), "status": "cancelled", "segments": 0})

    (only,) = await drain(follow, monkeypatch)
    assert json.loads(str(only))["error"] == {"message": "the job was cancelled", "code": "cancelled"}


@pytest.mark.parametrize("exc", [errors.BadAudio("transcription failed: x"), errors.Unavailable("no diarization")])
def test_a_failed_jobs_answer_is_final(exc: errors.AsrError) -> None:
    """A failed job's 400/503: its status, the job's Location and x-should-retry: false (a retry changes nothing)."""
    r = transcriptions._final(exc, {"X-Job-Id": str(JOB)})
    headers = {k.lower(): v for k, v in r.headers.items()}
    assert r.status_code == exc.status
    assert (headers["x-should-retry"], headers["location"]) == ("false", f"/v1/jobs/{JOB}")
