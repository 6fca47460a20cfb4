"""Wyoming's limits and departures against the real daemon and the `wyoming` package's AsyncTcpClient: the
connection cap (ASR_WYOMING_MAX_CONNECTIONS), a command of less than one audio frame, and a client that
leaves before its answer (its job is cancelled, queued or running, not left to run ahead of the next voice
command)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info

from tests import services
from tests.conftest import Daemon, leftover_files
from tests.e2e.test_wyoming import command, job_rows, port, raw_pcm, transcript


async def test_connections_over_the_cap_are_told_busy_and_closed(make_daemon: Callable[..., Daemon]) -> None:
    """ASR_WYOMING_MAX_CONNECTIONS=2: two idle connections are held; a third gets an `error` with code
    `busy` naming the setting and is closed; once one of the two leaves, `describe` is answered again."""
    d = make_daemon(ASR_WYOMING_PORT=str(services.free_port()), ASR_WYOMING_MAX_CONNECTIONS="2")
    async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=30) as first:
        async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=30) as second:
            await second.write_event(Describe().event())  # both are being served (not just in the backlog)
            assert (e := await second.read_event()) is not None and Info.is_type(e.type)
            async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=30) as third:
                event = await third.read_event()  # the server speaks first: nothing was sent
                assert event is not None and Error.is_type(event.type), event
                err = Error.from_event(event)
                assert err.code == "busy" and "ASR_WYOMING_MAX_CONNECTIONS" in err.text
                assert await third.read_event() is None  # closed
        for _ in range(50):  # the second's handler ends once it sees the close
            async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=30) as again:
                await again.write_event(Describe().event())
                event = await again.read_event()
            if event is not None and Info.is_type(event.type):
                break
            await asyncio.sleep(0.1)
        assert event is not None and Info.is_type(event.type), event
        await first.write_event(Describe().event())  # the first, held all along, is still served
        assert (e := await first.read_event()) is not None and Info.is_type(e.type)
    assert "wyoming_busy" in d.logs() and "Traceback" not in d.logs()


async def test_a_partial_frame_is_an_empty_transcript_and_no_job(make_daemon: Callable[..., Daemon]) -> None:
    """One byte of 16-bit audio (less than a frame) is said the same as no audio: an empty transcript,
    no job, no file, not an `invalid_audio` error."""
    d = make_daemon(ASR_WYOMING_PORT=str(services.free_port()))
    before = len(await job_rows(d, "true"))
    for pcm, width, channels in ((b"\x01", 2, 1), (b"\x01\x02\x03", 2, 2)):
        events = await command(d, pcm, width=width, channels=channels)
        assert transcript(events) == "", [e.data for e in events]
    assert len(await job_rows(d, "true")) == before
    assert leftover_files(d.state_dir) == []


@pytest.mark.slow
async def test_a_client_that_leaves_after_audio_stop_has_its_job_cancelled(
    make_daemon: Callable[..., Daemon], two_minutes: Path
) -> None:
    """A long command, then the client disconnects right after `audio-stop`: writing its answer fails, so
    its job is cancelled (ASR_WORKERS=1: the next voice command must not wait behind it) — not completed."""
    d = make_daemon(ASR_WYOMING_PORT=str(services.free_port()))
    pcm = raw_pcm(two_minutes)
    async with AsyncTcpClient("127.0.0.1", port(d)) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for i in range(0, len(pcm), 1 << 20):
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[i : i + (1 << 20)]).event())
        await client.write_event(AudioStop().event())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = await job_rows(d)
        if rows and rows[-1]["status"] in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.2)
    (row,) = rows
    assert row["status"] == "cancelled", dict(row)
    assert "wyoming_client_gone" in d.logs() and "Traceback" not in d.logs()


async def test_a_client_that_leaves_while_its_command_is_queued_has_it_cancelled_at_once(
    make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """No worker free (ASR_RUN_WORKER=false): a client that closes after `transcript-start` has its queued
    job cancelled within seconds, not left queued to run for nobody once a worker frees up."""
    d = make_daemon(ASR_WYOMING_PORT=str(services.free_port()), ASR_RUN_WORKER="false")
    pcm = raw_pcm(speech("Turn on the kitchen light."))
    async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=30) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm).event())
        await client.write_event(AudioStop().event())
        started = await client.read_event()  # the job is committed and waits for a worker
        assert started is not None and started.type == "transcript-start", started
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (row,) = await job_rows(d)
        if row["status"] != "queued":
            break
        await asyncio.sleep(0.1)
    assert row["status"] == "cancelled" and row["started_at"] is None, dict(row)
    assert "wyoming_client_gone" in d.logs() and "Traceback" not in d.logs()
