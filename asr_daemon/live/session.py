"""One live transcription session: the events of one WebSocket, its utterances, its durable job.

Three tasks per session: the reader (this module's `run`, which handles client events in order),
the sender (drains a bounded outbox; a client that stops reading is closed, never buffered
without end) and the finisher (decodes committed utterances one after another, stores their
segments and only then sends `completed`). Partial decodes run beside them, one at a time.
All decoding goes through the daemon's loaded model, in threads; it lives in live/decoding.py
(`Decoding`, mixed in here), this module holds the events, the audio and the job.

With server VAD the final decode starts before the utterance is committed: once the speaker has
been quiet for SPECULATE_S the utterance so far is decoded as the final text would be, while the
silence grows to `silence_duration_ms`. If no speech came back meanwhile the commit takes that
result (what followed was silence), so `completed` follows `speech_stopped` by what the decode has
left to do, not by a whole decode; if speech came back the guess is dropped and decoded again.
No partial starts (nor moves the stable text) once the speculative decode took the stable text as
its prefix, so the deltas sent are still a prefix of the completed text.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import errno
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from asr_daemon import jobs
from asr_daemon.engine import modelchoice, models
from asr_daemon.live import codec, protocol, store
from asr_daemon.live.decoding import Decoded, Decoding, Item
from asr_daemon.live.protocol import ProtocolError, SessionConfig
from asr_daemon.live.timeline import Timeline
from asr_daemon.live.vad import StreamingVad

if TYPE_CHECKING:
    from asr_daemon.live.manager import LiveManager

log = logging.getLogger(__name__)

RATE = codec.RATE
#: An utterance the VAD lets grow past this is committed and a new one begun (Whisper reads 30 s).
MAX_UTTERANCE_S = 28.0
#: A commit needs at least this much audio (OpenAI's rule).
MIN_COMMIT_S = 0.1
#: Server events waiting for a client that does not read, before it is closed.
OUTBOX = 512
#: Seconds one send may take before the client counts as not reading.
SEND_TIMEOUT = 10.0
#: Audio held back before it is written to the file (a flush per append would be a syscall storm).
FLUSH_S = 0.5
#: An append larger than this (base64 characters) is decoded in a thread: up to 15 MiB of base64 and its
#: resampling took 0.1-0.3 s, every other session and request waiting on the event loop meanwhile.
LARGE_APPEND = 1 << 20
#: An append is decoded, stored and fed to the VAD in pieces this long: an utterance is cut at MAX_UTTERANCE_S
#: as in a stream, and a large append's memory is one piece's (11 MiB of μ-law, 24 min of audio, took 700 MB
#: of RSS decoded at once).
PIECE_S = 5.0
#: A write that fails with one of these means the disk (or the process's file-size limit) has no room.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Closing(Exception):
    """End the session: an optional error event, then a close frame with `code` and `reason`."""

    def __init__(self, code: int, reason: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.error = code, reason, error


class LiveSession(Decoding):
    """State and handlers of one connection (see the module's docstring)."""

    def __init__(self, socket: Any, manager: LiveManager, key_id: int | None, initial: SessionConfig | None) -> None:
        self.socket, self.m, self.key_id = socket, manager, key_id
        self.settings = manager.settings
        self.id = protocol.new_id("sess")
        self.cfg = initial or SessionConfig()
        self.configured = initial is not None
        self.job_id: uuid.UUID | None = None
        self.audio: store.AudioFile | None = None
        self.entry: models.Loaded | None = None
        self.model_name = ""
        self.decoder = codec.Decoder(self.cfg.format)
        self.vad: StreamingVad | None = None
        self.timeline = Timeline()
        self.item: Item | None = None
        self.previous_item: str | None = None
        self.seq = 0
        self.language: str | None = None
        self.pending: list[bytes] = []
        self.pending_samples = 0
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX)
        self.commits: asyncio.Queue[Item | None] = asyncio.Queue()
        # committed audio not yet decoded: past ASR_LIVE_MAX_BUFFER_S the reader waits for the finisher (the
        # socket's own flow control then slows a client streaming faster than it is transcribed)
        self.backlog = 0
        self.room = asyncio.Event()
        self.room.set()
        self.opened = time.monotonic()
        self.last_audio = self.opened
        self.window: tuple[float, int] = (self.opened, 0)
        self.slow_client = False
        self.stats: dict[str, float] = {"utterances": 0, "decode_s": 0.0, "partials": 0, "final_max_s": 0.0,
                                        "speculative": 0, "speculative_hits": 0}  # fmt: skip
        self.disk = asyncio.Lock()
        self.unstored: Closing | None = None  # set once audio could not be written: the session ends with it
        self.partials: set[asyncio.Task[None]] = set()
        self.speculations: set[asyncio.Task[Decoded]] = set()
        self.reader: asyncio.Task[Closing | None] | None = None
        self.stop_reason: Closing | None = None  # why the manager ended the session (drain, cancel, key revoked)
        self.job_closed = False
        self.partial_cost = 0.0  # seconds a partial decode takes here lately (moving average)

    # --- output ------------------------------------------------------------------------------------
    def emit(self, ev: dict[str, Any]) -> None:
        """Queue a server event; a client that lets OUTBOX events pile up is marked and closed."""
        if self.slow_client:
            return
        try:
            self.outbox.put_nowait(ev)
        except asyncio.QueueFull:
            self.slow_client = True
            log.warning("live_client_not_reading", extra={"session": self.id})

    async def sender(self) -> None:
        """Send queued events in order until the sentinel; stops at the first failed or stuck send."""
        while (ev := await self.outbox.get()) is not None:
            try:
                await asyncio.wait_for(self.socket.send_text(json.dumps(ev)), SEND_TIMEOUT)
            except Exception:  # noqa: BLE001  # closed, reset, or a client that stopped reading: nothing more goes out
                self.slow_client = True
                return

    # --- configuration -----------------------------------------------------------------------------
    async def configure(self, etype: str, raw: dict[str, Any]) -> None:
        """session.update / transcription_session.update: validate, (re)load the model, start the job."""
        cfg = protocol.parse_session(etype, raw.get("session"), self.cfg)
        if self.timeline.end and (cfg.format != self.cfg.format or cfg.model != self.cfg.model):
            raise ProtocolError("session_locked", "the audio format and model cannot change once audio was sent")
        await self._lease(cfg.model)
        self.cfg, self.configured = cfg, True
        self.decoder = codec.Decoder(cfg.format) if not self.timeline.end else self.decoder
        self.vad = await self._vad_for(cfg)
        if self.job_id is None:
            await self._start_job()
        elif self.entry is not None:
            await store.set_model(self.m.pool, self.job_id, self.m.owner, self.entry.name)
        updated = "transcription_session.updated" if etype.startswith("transcription_session") else "session.updated"
        self.emit(protocol.event(updated, session=self.view()))

    async def _vad_for(self, cfg: SessionConfig) -> StreamingVad | None:
        """The VAD after an update: the same one while its options stay (it holds the stream's position and
        whether speech goes on), else a new one that starts where the stream is, speaking if an item is open."""
        if cfg.vad is None:
            return None
        if self.vad is not None and self.vad.options == cfg.vad:
            return self.vad
        return StreamingVad(cfg.vad, await self.m.vad_model(), start=self.timeline.end, speaking=self.item is not None)

    def view(self) -> dict[str, Any]:
        """The session object the client sees."""
        return self.cfg.view(self.id, str(self.job_id) if self.job_id else None, self.model_name or self.settings.model)

    async def _lease(self, wanted: str | None) -> None:
        name, path = modelchoice.resolve(self.settings.models_dir, self.m.model_alias(wanted), self.settings.model)
        if self.entry is not None and self.entry.name == name:
            return
        entry = await self.m.cache.acquire(name, path)
        if self.entry is not None:
            self.m.cache.release(self.entry)
        self.entry, self.model_name = entry, name

    async def _start_job(self) -> None:
        job_id = uuid.uuid4()
        cfg = self.cfg
        options = jobs.Options(language=cfg.language, prompt=cfg.prompt, beam_size=self.settings.live_beam_size)
        await store.create_job(
            self.m.pool, job_id=job_id, owner=self.m.owner, model=self.model_name, options=options,
            api_key_id=self.key_id, max_attempts=self.settings.max_attempts,
        )  # fmt: skip
        try:
            await self.m.liveness.hold(job_id)  # released by the manager when the session ends
            path = self.settings.uploads_dir / store.audio_name(job_id)
            try:
                self.audio = await asyncio.to_thread(store.AudioFile, path)
            except OSError as exc:
                raise self._unstorable(exc) from None
        except BaseException:  # no audio file (or no lock): the row would be a job no worker can run
            with contextlib.suppress(Exception):
                await store.discard(self.m.pool, job_id, self.m.owner)
                await self.m.liveness.release(job_id)
            raise
        self.job_id = job_id
        await self.m.hub.notify(job_id)
        log.info("live_session_started", extra={"session": self.id, "job_id": str(job_id), "model": self.model_name})

    # --- audio -------------------------------------------------------------------------------------
    async def append(self, ev: dict[str, Any]) -> None:
        """input_audio_buffer.append: decode, store, find speech edges (PIECE_S at a time), maybe decode a partial.

        A session stores at most ASR_MAX_AUDIO_SECONDS of audio (and what a WAV can hold): the append that
        reaches it is kept up to it, then the session closes; its job is completed with what was accepted.
        """
        if not self.configured:
            raise ProtocolError("session_not_configured", "send session.update before input_audio_buffer.append")
        data = ev.get("audio")
        if not isinstance(data, str):
            raise ProtocolError("invalid_type", "audio must be a base64 string", "audio")
        if len(data) * 3 // 4 > self.settings.live_max_append_bytes:
            raise ProtocolError(
                "audio_too_large", f"one append may carry at most {self.settings.live_max_append_bytes} bytes", "audio"
            )
        large = len(data) > LARGE_APPEND  # decoded in a thread: 15 MiB took 0.1-0.3 s of the event loop
        try:
            raw = await asyncio.to_thread(codec.b64decode, data) if large else codec.b64decode(data)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_base64", "audio is not valid base64", "audio") from None
        fmt = self.decoder.fmt
        width = 2 if fmt.type == "audio/pcm" else 1
        incoming = len(raw) // width * RATE // fmt.rate  # samples once decoded to 16 kHz
        if self.vad is None and (self.timeline.held + incoming) / RATE > self.settings.live_max_buffer_s:
            raise ProtocolError(
                "input_audio_buffer_full",
                f"more than {self.settings.live_max_buffer_s:g} s uncommitted: commit (or clear) the buffer",
            )
        cap = self.max_samples()
        over = self.timeline.end + incoming >= cap
        if over:  # keep what fits under the cap
            raw = raw[: max(0, cap - self.timeline.end) * fmt.rate // RATE * width]
        self.last_audio = time.monotonic()
        step = int(PIECE_S * fmt.rate) * width
        for at in range(0, len(raw), step):
            await self.room.wait()  # committed audio waiting for its decode is bounded inside one append too
            piece = raw[at : at + step]
            pcm = await asyncio.to_thread(self.decoder.feed, piece) if large else self.decoder.feed(piece)
            await self._store_audio(pcm)
            if self.unstored is not None:
                raise self.unstored
            await self._take(codec.to_float(pcm))
        self._maybe_speculate()
        self._maybe_partial()
        if over:
            limit = cap / RATE
            log.info("live_audio_limit_reached", extra={"session": self.id, "audio_s": round(limit, 3)})
            raise Closing(1000, "audio length limit reached", protocol.error("audio_limit_reached",
                          f"a live session stores at most {limit:g} s of audio (ASR_MAX_AUDIO_SECONDS); "
                          "its job keeps what was sent up to there"))  # fmt: skip

    def max_samples(self) -> int:
        """The most audio one session stores, in 16 kHz samples."""
        return int(min(self.settings.max_audio_seconds, store.MAX_SECONDS) * RATE)

    async def _take(self, samples: np.ndarray) -> None:
        """Add a piece of audio to the timeline and let the VAD find its speech edges."""
        self.timeline.append(samples)
        if self.vad is not None:
            for edge in await asyncio.to_thread(self.vad.feed, samples):
                self._edge(edge.start, edge.sample, edge.quiet_from)
            if self.item is None:
                self.timeline.drop_before(self.timeline.end - self._pad())
            elif self.timeline.end - self.item.start > MAX_UTTERANCE_S * RATE:
                self._commit(self.timeline.end)
                self.item = self._new_item(self.timeline.end)
        elif self.item is None and self.timeline.held:
            self.item = self._new_item(self.timeline.start)

    def _pad(self) -> int:
        return int(self.cfg.vad.prefix_padding_ms * RATE / 1000) if self.cfg.vad else 0

    def _edge(self, start: bool, at: int, quiet_from: int = -1) -> None:
        if start and self.item is None:
            begin = max(self.timeline.start, at - self._pad())
            self.item = self._new_item(begin)
            self.emit(protocol.event("input_audio_buffer.speech_started", audio_start_ms=begin * 1000 // RATE,
                                     item_id=self.item.id))  # fmt: skip
        elif not start and self.item is not None:
            self.emit(protocol.event("input_audio_buffer.speech_stopped", audio_end_ms=at * 1000 // RATE,
                                     item_id=self.item.id))  # fmt: skip
            self._commit(at, quiet_from)

    async def _store_audio(self, pcm: np.ndarray, sync: bool = False) -> None:
        """Queue samples for the file and write them every FLUSH_S (or now, with `sync`). A failed write sets
        `unstored` (the reader then closes the session); nothing more is written after it."""
        if self.unstored is not None:
            return
        if len(pcm):
            self.pending.append(pcm.tobytes())
            self.pending_samples += len(pcm)
        if self.audio is not None and (sync or self.pending_samples >= FLUSH_S * RATE):
            async with self.disk:  # taken off `pending` only once it can be written (a cancel waiting here keeps it)
                chunk, self.pending, self.pending_samples = b"".join(self.pending), [], 0
                try:
                    await asyncio.to_thread(self._write, chunk, sync)
                except OSError as exc:  # the file keeps what was written before (store.AudioFile.append)
                    self.unstored = self._unstorable(exc)

    def _write(self, chunk: bytes, sync: bool) -> None:
        assert self.audio is not None
        self.audio.append(chunk)
        if sync:
            self.audio.sync()

    def _unstorable(self, exc: OSError) -> Closing:
        """The close for audio the disk refused: `insufficient_storage` (1013) when it is full, else `server_error`."""
        code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        log.error("live_audio_not_stored", extra={"session": self.id, "job_id": str(self.job_id), "error": code})
        if exc.errno in NO_ROOM:
            return Closing(1013, "the server has no room for more audio", protocol.error("insufficient_storage",
                           "the server's disk is full: the session ends, its job keeps the audio stored so far",
                           kind="server_error"))  # fmt: skip
        return Closing(1011, "the server cannot store audio", protocol.error("server_error", "audio not stored",
                       kind="server_error"))  # fmt: skip

    def commit(self, client_event: str | None) -> None:
        """input_audio_buffer.commit (the client's, in either mode)."""
        if self.item is None or self.timeline.end - self.item.start < MIN_COMMIT_S * RATE:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: expected at least {MIN_COMMIT_S * 1000:.0f} ms of audio",
            )
        self._commit(self.timeline.end)
        if self.vad is not None:
            self.vad.reset()

    def clear(self) -> None:
        """input_audio_buffer.clear: drop the uncommitted audio (it stays in the stored file)."""
        if self.item is not None:
            self.item.done = True
        self.item = None
        self.timeline.drop_before(self.timeline.end)
        if self.vad is not None:
            self.vad.reset()
        self.emit(protocol.event("input_audio_buffer.cleared"))

    def _commit(self, end: int, quiet_from: int = -1) -> None:
        item, self.item = self.item, None
        assert item is not None
        item.end, item.done = end, True  # a partial still running is ignored from now on
        if item.quiet_from != quiet_from:  # speech after the speculative decode began, or another commit
            item.speculation = None
        item.samples = self.timeline.slice(item.start, end)  # the finisher decodes it later, the timeline moves on
        self.timeline.drop_before(end)  # the next item's padding never reaches back into this one's audio
        self.emit(protocol.event("input_audio_buffer.committed", item_id=item.id, previous_item_id=self.previous_item))
        self.previous_item = item.id
        self.backlog += end - item.start
        if self.backlog > self.settings.live_max_buffer_s * RATE:
            self.room.clear()
        self.commits.put_nowait(item)

    # --- the end -----------------------------------------------------------------------------------
    def wrap_up(self) -> None:
        """Commit pending speech and tell the finisher that nothing more comes."""
        if self.item is not None and self.timeline.end - self.item.start >= MIN_COMMIT_S * RATE:
            self._commit(self.timeline.end)
        self.commits.put_nowait(None)

    async def close_job(self, transcribed: bool = True) -> None:
        """Flush the audio and mark the job completed (after the finisher ended) — or, when utterances were
        left undecoded (`transcribed` False) or one failed, queue it: a worker transcribes the rest from the
        stored audio (from the end of the last stored segment: none is stored after a failed utterance)."""
        if self.audio is None or self.job_id is None:
            return
        tail = self.decoder.flush()[: max(0, self.max_samples() - self.timeline.end)]  # the resampler's last samples
        await self._store_audio(tail, sync=True)
        async with self.disk:
            await asyncio.to_thread(self.audio.close)
        self.job_closed = True
        if not transcribed or self.failed:
            queued = await store.requeue(
                self.m.pool, self.job_id, self.m.owner, duration=self.audio.seconds, audio_bytes=self.audio.data_bytes
            )
            log.warning("live_session_left_to_a_worker", extra={"session": self.id, "job_id": str(self.job_id),
                        "queued": queued, "audio_s": round(self.audio.seconds, 3), "failed": self.failed})  # fmt: skip
            with contextlib.suppress(Exception):
                await self.m.hub.ring()  # a worker claims it now
                await self.m.hub.notify(self.job_id)
            return
        timings = {"live_s": round(time.monotonic() - self.opened, 3), "decode_s": round(self.stats["decode_s"], 3),
                   "utterances": int(self.stats["utterances"]), "partials": int(self.stats["partials"]),
                   "final_max_s": round(self.stats["final_max_s"], 3), "speculative": int(self.stats["speculative"]),
                   "speculative_hits": int(self.stats["speculative_hits"])}  # fmt: skip
        done = await store.finish(
            self.m.pool, self.job_id, self.m.owner, duration=self.audio.seconds, audio_bytes=self.audio.data_bytes,
            language=self.language, timings=timings, device=self.entry.device if self.entry else "cpu",
        )  # fmt: skip
        log.info("live_session_ended", extra={"session": self.id, "job_id": str(self.job_id), "completed": done,
                                              "audio_s": round(self.audio.seconds, 3), **timings})  # fmt: skip
        with contextlib.suppress(Exception):
            await self.m.hub.notify(self.job_id)

    def release(self) -> None:
        """Give the model back to the cache."""
        if self.entry is not None:
            self.m.cache.release(self.entry)
            self.entry = None
