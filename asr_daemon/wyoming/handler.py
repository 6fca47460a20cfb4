"""One Wyoming connection: `describe` → `info`; `transcribe` + `audio-start`/`audio-chunk`/`audio-stop` →
`transcript-start`, a `transcript-chunk` per segment as the worker stores it, `transcript`, `transcript-stop`.

Events are read and written by the `wyoming` package; this module only bounds what it may read: an
event's JSON data or payload over `MAX_EVENT_BYTES` is refused before it is buffered, a header line
over the reader's 64 KiB limit too, and a connection that sends no complete event for
ASR_WYOMING_TIMEOUT seconds is closed. Malformed input, audio out of order or an unusable format gets
an `error` event and the connection is closed; the partial recording is removed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import cast

import asyncpg
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong

from asr_daemon import errors
from asr_daemon.wyoming import catalog, commands
from asr_daemon.wyoming.activity import Activity
from asr_daemon.wyoming.recording import FLUSH_BYTES, PcmFormat, Recording, Refused

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 4 << 20
"""Largest data or payload one event may carry (a second of 8-channel 32-bit 96 kHz audio is 3 MiB)."""
UNAVAILABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
"""What a database (or disk) outage raises: an `error` event saying so, never a dropped daemon."""
WRITE_TIMEOUT = 10.0
"""Seconds an answer may take to leave (a client that does not read must not hold the handler)."""


class Malformed(Exception):
    """The bytes on the connection are not a Wyoming event we can read."""


class _BoundedReader:
    """The stream the `wyoming` package reads events from, refusing lengths it would otherwise buffer."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.refused: str | None = None
        self.got_line = False

    async def readline(self) -> bytes:
        self.got_line = False
        try:
            line = await self.reader.readline()
        except ValueError:
            self.refused = "an event header longer than 64 KiB"
            raise
        self.got_line = bool(line)
        return line

    async def readexactly(self, n: int) -> bytes:
        if not isinstance(n, int) or n > MAX_EVENT_BYTES:
            self.refused = f"an event announced {str(n)[:20]} bytes of data or payload (at most {MAX_EVENT_BYTES})"
            raise ValueError(self.refused)
        return await self.reader.readexactly(n)


@dataclass
class _Request:
    """What `transcribe` asked for."""

    model: str
    language: str | None


class CommandHandler:
    """Serves one connection until the client leaves, misbehaves or goes silent."""

    def __init__(
        self, svc: commands.Services, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: Activity
    ) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.reader = _BoundedReader(reader)
        self.writer = writer
        self.activity = activity
        self.request: _Request | None = None
        self.recording: Recording | None = None
        self.started = 0.0
        self.transcribing = False

    @property
    def busy(self) -> bool:
        """A command is under way: its audio is arriving or it is being transcribed (a stop waits)."""
        return self.transcribing or self.recording is not None

    # --- the connection ------------------------------------------------------------------------
    async def run(self) -> None:
        """Read events until the client leaves or must be dropped."""
        try:
            while await self._next():
                pass
        finally:
            if self.recording is not None:
                await asyncio.to_thread(self.recording.discard)
                self.recording = None
            self.writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self.writer.wait_closed()

    async def _next(self) -> bool:
        """Read and handle one event; False ends the connection."""
        try:
            event = await self._read()
        except TimeoutError:
            await self._error(
                f"nothing arrived for {self.settings.wyoming_timeout:g} s (ASR_WYOMING_TIMEOUT)", "timeout"
            )
            return False
        except (asyncio.IncompleteReadError, ConnectionError):
            return False  # the client left half-way through an event
        except Malformed as exc:
            log.info("wyoming_malformed", extra={"reason": str(exc)})
            await self._error(f"not a Wyoming event: {exc}", "malformed")
            return False
        if event is None:
            return False
        try:
            return await self.handle(event)
        except (KeyError, TypeError, ValueError) as exc:  # an audio event without rate/width/channels, ...
            await self._error(f"malformed {event.type} event: {type(exc).__name__} {str(exc)[:80]}", "malformed")
            return False
        except UNAVAILABLE as exc:
            log.warning("wyoming_unavailable", extra={"error": type(exc).__name__})
            return await self._refuse(
                "the database is unavailable; nothing was stored, retry shortly", "unavailable", 503
            )
        except Exception as exc:  # a bug: logged with its traceback, the client told, the daemon unaffected
            log.error("wyoming_handler_failed", exc_info=exc, extra={"event_type": event.type[:40]})
            return await self._refuse("internal error: the server logged the details", "internal_error", 500)

    async def _read(self) -> Event | None:
        try:
            async with asyncio.timeout(self.settings.wyoming_timeout):
                # the package's reader: typed for a StreamReader, it uses only readline/readexactly
                event = await async_read_event(cast(asyncio.StreamReader, self.reader))
        # JSON that is not an event; RecursionError: nesting deeper than json.loads can follow
        except (KeyError, AttributeError, TypeError, ValueError, RecursionError) as exc:
            raise Malformed(f"{type(exc).__name__} {str(exc)[:80]}") from None
        if event is None:
            if self.reader.refused or self.reader.got_line:
                raise Malformed(self.reader.refused or "the header line is not JSON")
            return None  # end of stream
        if not isinstance(event.type, str) or not isinstance(event.data, dict):
            raise Malformed("an event needs a string type and an object of data")
        return event

    async def _write(self, event: Event) -> bool:
        """Send one event; False when the client is gone or does not read."""
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await async_write_event(event, self.writer)
        except (OSError, ConnectionError, TimeoutError):
            return False
        return True

    async def _error(self, text: str, code: str) -> None:
        await self._write(Error(text=text, code=code).event())

    async def refuse_busy(self, text: str) -> None:
        """The server is at its connection cap: an `error` event with code `busy`, read nothing, close."""
        self.activity.request("connect", 503, time.monotonic(), error="busy")
        try:
            await self._error(text, "busy")
        finally:
            self.writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self.writer.wait_closed()

    # --- events --------------------------------------------------------------------------------
    async def handle(self, event: Event) -> bool:
        """One event; False ends the connection."""
        t = event.type
        if Describe.is_type(t):
            t0 = time.monotonic()
            info = await asyncio.to_thread(catalog.describe, self.settings)  # reads the models directory
            ok = await self._write(info.event())
            self.activity.request("describe", 200 if ok else 499, t0)
            return ok
        if Ping.is_type(t):
            return await self._write(Pong(text=event.data.get("text")).event())
        if Transcribe.is_type(t):
            return await self._transcribe(Transcribe.from_event(event))
        if AudioStart.is_type(t):
            return await self._audio_start(AudioStart.from_event(event))
        if AudioChunk.is_type(t):
            return await self._audio_chunk(AudioChunk.from_event(event))
        if AudioStop.is_type(t):
            return await self._audio_stop()
        return True  # the protocol: servers drop events they do not know

    async def _refuse(self, text: str, code: str, status: int = 400) -> bool:
        """Answer an `error`, drop the command, end the connection."""
        await self._error(text, code)
        if self.recording is not None:
            await asyncio.to_thread(self.recording.discard)
            self.recording = None
        self.activity.request("transcribe", status, self.started or time.monotonic(), error=code)
        return False

    async def _transcribe(self, req: Transcribe) -> bool:
        self.started = time.monotonic()
        if self.recording is not None:
            return await self._refuse("transcribe arrived while audio was streaming", "out_of_order")
        try:
            language = catalog.normalize_language(req.language)
            model = await asyncio.to_thread(catalog.choose, self.settings, req.name, language)
        except errors.AsrError as exc:
            return await self._refuse(exc.message, exc.code)
        self.request = _Request(model, language)
        return True

    async def _audio_start(self, start: AudioStart) -> bool:
        if self.recording is not None:
            return await self._refuse("audio-start arrived while audio was already streaming", "out_of_order")
        if self.request is None:  # `transcribe` is optional: the default model, any language
            self.started = time.monotonic()
            try:
                model = await asyncio.to_thread(catalog.choose, self.settings, None, None)
            except errors.AsrError as exc:
                return await self._refuse(exc.message, exc.code)
            self.request = _Request(model, None)
        fmt = PcmFormat(start.rate, start.width, start.channels)
        try:
            fmt.check(self.settings.max_sample_rate, self.settings.max_channels)
        except Refused as exc:
            return await self._refuse(str(exc), "unsupported_audio")
        self.recording = Recording(self.settings.uploads_dir / "tmp", fmt, self.settings.wyoming_max_seconds)
        return True

    async def _audio_chunk(self, chunk: AudioChunk) -> bool:
        rec = self.recording
        if rec is None:
            return await self._refuse(
                "audio-chunk without audio-start: send transcribe, audio-start first", "no_audio_start"
            )
        fmt = PcmFormat(chunk.rate, chunk.width, chunk.channels)
        try:
            fmt.check(self.settings.max_sample_rate, self.settings.max_channels)
            rec.add(chunk.audio, fmt)
            if rec.pending_bytes >= FLUSH_BYTES:
                await asyncio.to_thread(rec.flush)
        except Refused as exc:
            return await self._refuse(str(exc), "unsupported_audio")
        except OSError as exc:
            log.warning("wyoming_store_failed", extra={"error": type(exc).__name__})
            return await self._refuse("the server could not store the audio", "storage", 507)
        return True

    async def _audio_stop(self) -> bool:
        rec, req = self.recording, self.request
        if rec is None or req is None:
            return await self._refuse("audio-stop without audio-start", "no_audio_start")
        self.recording, self.request = None, None
        try:
            written = rec.end()
        except Refused as exc:  # the resampler's tail took it past ASR_WYOMING_MAX_SECONDS
            self.recording = rec  # discarded by the refusal
            return await self._refuse(str(exc), "unsupported_audio")
        if written == 0:  # not one whole frame arrived (a partial one is dropped): nothing was said
            await asyncio.to_thread(rec.discard)
            await self._write(TranscriptStart(language=req.language).event())
            await self._write(Transcript(text="", language=req.language).event())
            self.activity.request("transcribe", 200, self.started)
            return await self._write(TranscriptStop().event())
        return await self._run_command(rec, req)

    def _gone(self) -> bool:
        """The client closed the connection (its sending side at least: nothing more can come from it, and
        systemd's proxy in front closes both sides at once) with nothing left unread."""
        return self.reader.reader.at_eof() or self.writer.is_closing()

    async def _run_command(self, rec: Recording, req: _Request) -> bool:
        job: dict[str, uuid.UUID | None] = {"id": None}
        seconds = rec.seconds
        first = True

        async def on_job(job_id: uuid.UUID) -> bool:
            job["id"] = job_id
            return await self._write(TranscriptStart(language=req.language).event())

        async def on_segment(text: str) -> bool:
            nonlocal first
            ok = await self._write(TranscriptChunk(text=text.lstrip() if first else text).event())
            first = False
            return ok

        self.transcribing = True
        try:
            answer = await commands.transcribe(self.svc, rec, req.model, req.language, on_job, on_segment, self._gone)
        except commands.ClientGone:  # its job was cancelled: nobody is waiting for the answer
            self.activity.request("transcribe", 499, self.started, job["id"], error="client_gone")
            return False
        except errors.AsrError as exc:
            log.info("wyoming_command_failed", extra={"job_id": str(job["id"]), "code": exc.code})
            await self._error(exc.message, exc.code)
            self.activity.request("transcribe", exc.status, self.started, job["id"], error=exc.code)
            return False
        finally:
            self.transcribing = False
            await asyncio.to_thread(rec.discard)
        ok = await self._write(Transcript(text=answer.text, language=answer.language).event())
        ok = ok and await self._write(TranscriptStop().event())
        took = time.monotonic() - self.started
        log.info(
            "wyoming_command",
            extra={
                "job_id": str(answer.job_id),
                "model": req.model,
                "audio_s": round(seconds, 2),
                "took_s": round(took, 3),
            },
        )
        self.activity.request(
            "transcribe", 200 if ok else 499, self.started, answer.job_id, bytes_in=int(seconds * 32000)
        )
        return ok
