"""Wyoming speech-to-text against the real daemon, driven by the `wyoming` package's own AsyncTcpClient
(what Home Assistant uses) on espeak-ng voice commands: describe, English and German commands, the
streaming events, any audio format, the job each command becomes, and bad input that must close the
connection (with an `error` event where one can be sent) and leave the daemon and the disk clean."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong

from tests import services
from tests.conftest import Daemon, leftover_files

EN = "Turn on the living room lamp."
DE = "Schalte das Licht im Wohnzimmer ein."
TIMEOUT = "2"


def raw_pcm(path: Path, rate: int = 16000, bits: int = 16, channels: int = 1) -> bytes:
    """The speech file as raw little-endian PCM in the given format (sox; 8-bit is unsigned as in WAV)."""
    enc = ["-e", "unsigned-integer"] if bits == 8 else ["-e", "signed-integer"]
    out = subprocess.run(
        ["sox", str(path), "-t", "raw", "-r", str(rate), "-b", str(bits), *enc, "-c", str(channels), "-L", "-"],
        check=True,
        capture_output=True,
    )
    return out.stdout


@pytest.fixture(scope="module")
def wy(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon (tiny.en by default, base also on disk) serving Wyoming on a free port."""
    return make_module_daemon(ASR_WYOMING_PORT=str(services.free_port()), ASR_WYOMING_TIMEOUT=TIMEOUT)


def port(d: Daemon) -> int:
    """The daemon's Wyoming port."""
    return int(d.env["ASR_WYOMING_PORT"])


async def command(
    d: Daemon,
    pcm: bytes,
    *,
    rate: int = 16000,
    width: int = 2,
    channels: int = 1,
    language: str | None = "en",
    name: str | None = None,
    chunk_ms: int = 64,
) -> list[Event]:
    """Send one voice command as Home Assistant does; every event received until `transcript-stop`."""
    step = max(width * channels, int(rate * chunk_ms / 1000) * width * channels)
    received: list[Event] = []
    async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=120) as client:
        await client.write_event(Transcribe(name=name, language=language).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(pcm), step):
            chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        while (event := await client.read_event()) is not None:
            received.append(event)
            if TranscriptStop.is_type(event.type) or Error.is_type(event.type):
                break
    return received


def transcript(events: list[Event]) -> str:
    """The final transcript's text (fails on an `error` event)."""
    for e in events:
        assert not Error.is_type(e.type), e.data
        if Transcript.is_type(e.type):
            return Transcript.from_event(e).text
    raise AssertionError(f"no transcript in {[e.type for e in events]}")


async def job_rows(d: Daemon, where: str = "kind = 'wyoming'") -> list[asyncpg.Record]:
    """Job rows of the daemon's database."""
    conn = await asyncpg.connect(d.env["ASR_DATABASE_URL"])
    try:
        return await conn.fetch(f"SELECT * FROM jobs WHERE {where} ORDER BY created_at")  # test-only filter
    finally:
        await conn.close()


def words(text: str) -> str:
    """Lower-case letters and spaces only."""
    return "".join(c for c in text.lower() if c.isalpha() or c == " ").strip()


async def test_describe_lists_the_local_models_and_their_languages(wy: Daemon) -> None:
    """`describe` → `info` with one streaming ASR program listing tiny.en (English) and base (multilingual)."""
    async with AsyncTcpClient("127.0.0.1", port(wy), read_timeout=30) as client:
        await client.write_event(Describe().event())
        event = await client.read_event()
    assert event is not None and Info.is_type(event.type)
    info = Info.from_event(event)
    (program,) = info.asr
    assert program.supports_transcript_streaming
    langs = {m.name: m.languages for m in program.models}
    assert program.models[0].name == "tiny.en"  # the default first
    assert langs["tiny.en"] == ["en"]
    assert {"en", "de", "fr"} <= set(langs["base"]) and len(langs["base"]) >= 99
    assert all(m.installed for m in program.models)


async def test_an_english_command_is_transcribed_and_kept_as_a_wyoming_job(wy: Daemon, speech: Any) -> None:
    """An English command on tiny.en: transcript-start, chunk(s), transcript, transcript-stop, in that order;
    the chunks add up to the transcript, and the command is a completed job of kind 'wyoming' in the archive."""
    events = await command(wy, raw_pcm(speech(EN)))
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript", "transcript-stop"], types
    chunks = [TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type)]
    assert chunks, types
    text = transcript(events)
    assert words(text) == "turn on the living room lamp"
    assert "".join(chunks).strip() == text
    assert TranscriptStart.from_event(events[0]).language == "en"
    (row,) = [r for r in await job_rows(wy) if r["model"] == "tiny.en"][-1:]
    assert row["status"] == "completed" and row["filename"] == "voice-command.wav" and row["priority"] == 100
    assert (wy.state_dir / "uploads" / row["audio_sha256"]).is_file()  # retention decides, like any upload
    with wy.client() as c:
        job = c.get(f"/v1/jobs/{row['id']}").json()
    assert job["status"] == "completed"
    assert leftover_files(wy.state_dir) == []


async def test_a_german_command_goes_to_the_multilingual_model(wy: Daemon, speech: Any) -> None:
    """Home Assistant names no model: German on a host whose default is tiny.en runs on base, and is German."""
    events = await command(wy, raw_pcm(speech(DE, voice="de")), language="de")
    text = words(transcript(events))
    assert "licht" in text and "wohnzimmer" in text, text
    assert Transcript.from_event(next(e for e in events if Transcript.is_type(e.type))).language == "de"
    rows = await job_rows(wy, "kind = 'wyoming' AND model = 'base'")
    assert rows and rows[-1]["language"] == "de"


async def test_other_rates_widths_and_channels_transcribe_the_same(wy: Daemon, speech: Any) -> None:
    """44.1 kHz stereo 24-bit and 8 kHz unsigned 8-bit give the same words as 16 kHz mono 16-bit."""
    clip = speech(EN)
    hifi = await command(wy, raw_pcm(clip, 44100, 24, 2), rate=44100, width=3, channels=2, chunk_ms=20)
    lofi = await command(wy, raw_pcm(clip, 8000, 8, 1), rate=8000, width=1, channels=1)
    # the words, not their exact spelling: tiny.en hears espeak's "living" as "leaving" now and then,
    # depending on the CPU threads the transcription ran with (ASR_THREAD_POLICY=replicas)
    assert "turn on the" in words(transcript(hifi)) and "room lamp" in words(transcript(hifi))
    assert "room" in words(transcript(lofi))


async def test_a_named_model_and_a_regional_language_tag_are_honoured(wy: Daemon, speech: Any) -> None:
    """`transcribe` naming base with language en-US runs on base in English."""
    text = transcript(await command(wy, raw_pcm(speech(EN)), language="en-US", name="base"))
    assert "living room" in words(text)
    assert await job_rows(wy, "kind = 'wyoming' AND model = 'base' AND language = 'en'")


async def test_an_unknown_model_or_language_gets_an_error_event(wy: Daemon) -> None:
    """A model not on this host, or a language Whisper does not know, is an `error` event, no job."""
    before = len(await job_rows(wy))
    for req in (Transcribe(name="large-v9"), Transcribe(language="klingon"), Transcribe(name="tiny.en", language="de")):
        async with AsyncTcpClient("127.0.0.1", port(wy), read_timeout=30) as client:
            await client.write_event(req.event())
            event = await client.read_event()
            assert event is not None and Error.is_type(event.type), event
            assert await client.read_event() is None  # closed
    assert len(await job_rows(wy)) == before


async def test_silence_without_audio_is_an_empty_transcript_and_no_job(wy: Daemon) -> None:
    """audio-start then audio-stop with no chunk: an empty transcript, and no job is made."""
    before = len(await job_rows(wy))
    events = await command(wy, b"")
    assert transcript(events) == ""
    assert len(await job_rows(wy)) == before


async def test_ping_unknown_events_and_several_requests_on_one_connection(wy: Daemon) -> None:
    """`ping` → `pong`; an event type we do not know is dropped (the protocol's rule), and the same
    connection then still answers `describe`."""
    async with AsyncTcpClient("127.0.0.1", port(wy), read_timeout=30) as client:
        await client.write_event(Ping(text="hello").event())
        pong = await client.read_event()
        assert pong is not None and Pong.is_type(pong.type) and Pong.from_event(pong).text == "hello"
        await client.write_event(Event(type="run-satellite", data={"x": 1}))
        await client.write_event(Describe().event())
        info = await client.read_event()
        assert info is not None and Info.is_type(info.type)


# --- bad input ---------------------------------------------------------------------------------


def raw_exchange(d: Daemon, payload: bytes, wait: float = 10.0, close_write: bool = True) -> bytes:
    """Send bytes on a plain socket; everything the server sends until it closes (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", port(d)), timeout=wait) as s:
        if payload:
            s.sendall(payload)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                return out
            out += data
        raise AssertionError(f"the server kept the connection open; it sent {out[:200]!r}")


def header(kind: str, **fields: Any) -> bytes:
    """A Wyoming header line."""
    return json.dumps({"type": kind, **fields}).encode() + b"\n"


def error_code(reply: bytes) -> str | None:
    """The code of the `error` event in a reply (None when there is none)."""
    lines = reply.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"{") and b'"error"' in line:
            head = json.loads(line)
            data = json.loads(b"\n".join(lines[i + 1 :])[: head["data_length"]])
            return str(data.get("code"))
    return None


BAD: dict[str, tuple[bytes, str | None, bool]] = {
    # name: (bytes sent, error code expected, whether we half-close our side after sending)
    "garbage": (bytes(range(256)) * 4 + b"\n", "malformed", True),
    "not json": (b"hello wyoming\n", "malformed", True),
    "json but not an event": (b"[1, 2, 3]\n", "malformed", True),
    "no type": (b'{"data": {}}\n', "malformed", True),
    "header line without end": (b"{" + b"x" * 70000, "malformed", False),
    "enormous data_length": (header("transcribe", data_length=1 << 40), "malformed", False),
    "enormous payload_length": (header("audio-chunk", payload_length=1 << 40), "malformed", False),
    "data_length not a number": (header("transcribe", data_length="many"), "malformed", True),
    "header without data": (header("transcribe", data_length=100), "timeout", False),
    "silent client": (b"", "timeout", False),
    "chunk without audio-start": (
        header("audio-chunk", data={"rate": 16000, "width": 2, "channels": 1}, payload_length=4) + b"\0\0\0\0",
        "no_audio_start",
        False,
    ),
    "audio-stop without audio-start": (header("audio-stop"), "no_audio_start", False),
    "unusable audio format": (
        header("audio-start", data={"rate": 16000, "width": 7, "channels": 1}),
        "unsupported_audio",
        False,
    ),
    "audio-start without format": (header("audio-start", data={"rate": 16000}), "malformed", False),
    "data that is not an object": (header("transcribe", data=[1]), "malformed", False),
    "deeply nested json": (b"[" * 60000 + b"\n", "malformed", True),
    "deeply nested data part": (header("transcribe", data_length=50000) + b"[" * 50000, "malformed", True),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_closes_the_connection_and_leaves_nothing(wy: Daemon, name: str) -> None:
    """Garbage, a header without its data, audio out of order, a silent client, an enormous length: an
    `error` event (when the stream still allows one), the connection closed, no job, no file, daemon healthy."""
    payload, code, close_write = BAD[name]
    before = asyncio.run(job_rows(wy, "true"))
    t0 = time.monotonic()
    reply = raw_exchange(wy, payload, wait=float(TIMEOUT) + 15, close_write=close_write)
    assert error_code(reply) == code, reply[:300]
    if code == "timeout":
        assert time.monotonic() - t0 >= float(TIMEOUT) - 0.1
    assert len(asyncio.run(job_rows(wy, "true"))) == len(before)
    assert leftover_files(wy.state_dir) == []
    assert httpx.get(wy.url + "/healthz", timeout=10).status_code == 200
    assert "Traceback" not in wy.logs() and "wyoming_handler_failed" not in wy.logs()


async def test_a_client_that_leaves_mid_command_leaves_no_file(wy: Daemon, speech: Any) -> None:
    """audio-start and half the audio, then the client disconnects: the partial recording is removed, no job."""
    before = len(await job_rows(wy, "true"))
    pcm = raw_pcm(speech(EN))
    async with AsyncTcpClient("127.0.0.1", port(wy)) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[: len(pcm) // 2]).event())
    for _ in range(50):
        if not leftover_files(wy.state_dir):
            break
        await asyncio.sleep(0.1)
    assert leftover_files(wy.state_dir) == []
    assert len(await job_rows(wy, "true")) == before


async def test_a_command_over_the_length_limit_is_refused(make_daemon: Callable[..., Daemon], speech: Any) -> None:
    """Audio past ASR_WYOMING_MAX_SECONDS gets an error event while streaming; nothing is kept."""
    d = make_daemon(ASR_WYOMING_PORT=str(services.free_port()), ASR_WYOMING_MAX_SECONDS="1")
    # 1.75 s in one chunk: the server closes as soon as it refuses, so a later chunk could not be written
    pcm = raw_pcm(speech(EN))
    async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=60) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm).event())
        event = await client.read_event()
        assert event is not None and Error.is_type(event.type), event
        assert "ASR_WYOMING_MAX_SECONDS" in Error.from_event(event).text
        assert await client.read_event() is None  # closed
    assert leftover_files(d.state_dir) == [] and await job_rows(d, "true") == []


# --- retention and activity ---------------------------------------------------------------------


async def test_keep_false_deletes_the_job_and_audio_after_answering(
    make_daemon: Callable[..., Daemon], speech: Any
) -> None:
    """ASR_WYOMING_KEEP=false: the transcript is answered, then no job row, segment or audio file remains."""
    d = make_daemon(ASR_WYOMING_PORT=str(services.free_port()), ASR_WYOMING_KEEP="false")
    text = transcript(await command(d, raw_pcm(speech(EN))))
    assert "living room" in words(text)
    assert await job_rows(d, "true") == []
    assert [p for p in (d.state_dir / "uploads").iterdir() if p.name != "tmp"] == []
    assert "wyoming_command_forgotten" in d.logs()


async def test_wyoming_traffic_is_activity_for_the_idle_watcher(wy: Daemon) -> None:
    """An open Wyoming connection keeps the busy marker fresh, and a describe leaves an access-log line."""
    log = wy.state_dir / "log" / "access.log"
    busy = log.with_suffix(".busy")
    t0 = time.time()
    async with AsyncTcpClient("127.0.0.1", port(wy), read_timeout=30) as client:
        await asyncio.sleep(0.2)
        assert busy.stat().st_mtime >= t0 - 1
        await client.write_event(Describe().event())
        assert await client.read_event() is not None
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    mine = [x for x in lines if x["path"] == "wyoming/describe"]
    assert mine and mine[-1]["method"] == "WYOMING" and mine[-1]["status"] == 200 and not mine[-1]["probe"]


def test_a_taken_port_does_not_take_the_http_api_down(make_daemon: Callable[..., Daemon]) -> None:
    """Another program on the Wyoming port: the daemon logs `wyoming_bind_failed` and serves HTTP anyway."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        d = make_daemon(ASR_WYOMING_PORT=str(s.getsockname()[1]))
        assert httpx.get(d.url + "/readyz", timeout=10).status_code == 200
        assert "wyoming_bind_failed" in d.logs()


async def test_a_stop_lets_the_command_under_way_answer(make_daemon: Callable[..., Daemon], speech: Any) -> None:
    """SIGTERM while a command is being transcribed: the client still gets its transcript, then the
    daemon exits cleanly (as Granian lets in-flight HTTP requests finish before the drain)."""
    d = make_daemon(ASR_WYOMING_PORT=str(services.free_port()))
    pcm = raw_pcm(speech(EN))
    async with AsyncTcpClient("127.0.0.1", port(d), read_timeout=120) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm).event())
        await client.write_event(AudioStop().event())
        first = await client.read_event()
        assert first is not None and TranscriptStart.is_type(first.type)  # the job is committed
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        events = [first]
        while (event := await client.read_event()) is not None:
            events.append(event)
            if TranscriptStop.is_type(event.type):
                break
    assert "living room" in words(transcript(events))
    assert d.proc.wait(60) == 0
    assert "wyoming_stopped" in d.logs() and "Traceback" not in d.logs()
