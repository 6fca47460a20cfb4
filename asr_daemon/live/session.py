"""One live transcription session: the events of one WebSocket, its utterances, its durable job.

Three tasks per session: the reader (this module's `run`, which handles client events in order),
the sender (drains a bounded outbox; a client that stops reading is closed, never buffered
without end) and the finisher (decodes committed utterances one after another, stores their
segments and only then sends `completed`). Partial decodes run beside them, one at a time.
All decoding goes through the daemon's loaded model, in threads.

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
import base64
import binascii
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from asr_daemon import errors, jobs, queries
from asr_daemon.engine import modelchoice, models, transcriber
from asr_daemon.live import codec, protocol, store
from asr_daemon.live.agreement import Agreement
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
#: Seconds of quiet after speech before the utterance's final decode starts speculatively (at most
#: half of `silence_duration_ms`): a pause between words shorter than this costs no decode.
SPECULATE_S = 0.15


Decoded = tuple[str, list[transcriber.Segment], str | None]


class Voided(Exception):
    """A speculative decode no longer wanted when its turn came."""


class Closing(Exception):
    """End the session: an optional error event, then a close frame with `code` and `reason`."""

    def __init__(self, code: int, reason: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.error = code, reason, error


@dataclass
class Item:
    """One utterance: its id, where it starts in the session's audio, its partial text."""

    id: str
    start: int
    agreement: Agreement = field(default_factory=Agreement)
    decoded_at: int = 0  # stream position of the last partial decode
    partial: asyncio.Task[None] | None = None
    end: int = 0
    done: bool = False
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    speculation: asyncio.Task[Decoded] | None = None  # the final decode started in the silence
    quiet_from: int = -1  # the quiet run it started in (a commit at the end of the same run takes it)


class LiveSession:
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
        self.opened = time.monotonic()
        self.last_audio = self.opened
        self.window: tuple[float, int] = (self.opened, 0)
        self.slow_client = False
        self.stats: dict[str, float] = {"utterances": 0, "decode_s": 0.0, "partials": 0, "final_max_s": 0.0,
                                        "speculative": 0, "speculative_hits": 0}  # fmt: skip
        self.disk = asyncio.Lock()
        self.partials: set[asyncio.Task[None]] = set()
        self.speculations: set[asyncio.Task[Decoded]] = set()
        self.reader: asyncio.Task[Closing | None] | None = None
        self.stop_reason: tuple[int, str] | None = None
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
        self.vad = StreamingVad(cfg.vad, await self.m.vad_model()) if cfg.vad else None
        if self.job_id is None:
            await self._start_job()
        elif self.entry is not None:
            await store.set_model(self.m.pool, self.job_id, self.m.owner, self.entry.name)
        updated = "transcription_session.updated" if etype.startswith("transcription_session") else "session.updated"
        self.emit(protocol.event(updated, session=self.view()))

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
        self.job_id = job_id
        await self.m.liveness.hold(job_id)  # released by the manager when the session ends
        try:
            self.audio = await asyncio.to_thread(store.AudioFile, self.settings.uploads_dir / store.audio_name(job_id))
        except OSError:
            log.exception("live_audio_unwritable", extra={"session": self.id})
            raise Closing(1011, "the server cannot store audio", protocol.error("server_error", "audio not stored",
                          kind="server_error")) from None  # fmt: skip
        await self.m.hub.notify(job_id)
        log.info("live_session_started", extra={"session": self.id, "job_id": str(job_id), "model": self.model_name})

    # --- audio -------------------------------------------------------------------------------------
    async def append(self, ev: dict[str, Any]) -> None:
        """input_audio_buffer.append: decode, store, find speech edges, maybe decode a partial."""
        if not self.configured:
            raise ProtocolError("session_not_configured", "send session.update before input_audio_buffer.append")
        data = ev.get("audio")
        if not isinstance(data, str):
            raise ProtocolError("invalid_type", "audio must be a base64 string", "audio")
        if len(data) * 3 // 4 > self.settings.live_max_append_bytes:
            raise ProtocolError(
                "audio_too_large", f"one append may carry at most {self.settings.live_max_append_bytes} bytes", "audio"
            )
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_base64", "audio is not valid base64", "audio") from None
        pcm = self.decoder.feed(raw)
        if self.vad is None and (self.timeline.held + len(pcm)) / RATE > self.settings.live_max_buffer_s:
            raise ProtocolError(
                "input_audio_buffer_full",
                f"more than {self.settings.live_max_buffer_s:g} s uncommitted: commit (or clear) the buffer",
            )
        self.last_audio = time.monotonic()
        await self._store_audio(pcm)
        samples = codec.to_float(pcm)
        self.timeline.append(samples)
        if self.vad is not None:
            for edge in await asyncio.to_thread(self.vad.feed, samples):
                self._edge(edge.start, edge.sample, edge.quiet_from)
            if self.item is None:
                self.timeline.drop_before(self.timeline.end - self._pad())
            elif self.timeline.end - self.item.start > MAX_UTTERANCE_S * RATE:
                self._commit(self.timeline.end)
                self.item = Item(protocol.new_id("item"), self.timeline.end, decoded_at=self.timeline.end)
        elif self.item is None and self.timeline.held:
            self.item = Item(protocol.new_id("item"), self.timeline.start, decoded_at=self.timeline.start)
        self._maybe_speculate()
        self._maybe_partial()

    def _pad(self) -> int:
        return int(self.cfg.vad.prefix_padding_ms * RATE / 1000) if self.cfg.vad else 0

    def _edge(self, start: bool, at: int, quiet_from: int = -1) -> None:
        if start and self.item is None:
            begin = max(self.timeline.start, at - self._pad())
            self.item = Item(protocol.new_id("item"), begin, decoded_at=begin)
            self.emit(protocol.event("input_audio_buffer.speech_started", audio_start_ms=begin * 1000 // RATE,
                                     item_id=self.item.id))  # fmt: skip
        elif not start and self.item is not None:
            self.emit(protocol.event("input_audio_buffer.speech_stopped", audio_end_ms=at * 1000 // RATE,
                                     item_id=self.item.id))  # fmt: skip
            self._commit(at, quiet_from)

    async def _store_audio(self, pcm: np.ndarray, sync: bool = False) -> None:
        if len(pcm):
            self.pending.append(pcm.tobytes())
            self.pending_samples += len(pcm)
        if self.audio is not None and (sync or self.pending_samples >= FLUSH_S * RATE):
            chunk, self.pending, self.pending_samples = b"".join(self.pending), [], 0
            async with self.disk:
                await asyncio.to_thread(self._write, chunk, sync)

    def _write(self, chunk: bytes, sync: bool) -> None:
        assert self.audio is not None
        self.audio.append(chunk)
        if sync:
            self.audio.sync()

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
        self.timeline.drop_before(end - self._pad())
        self.emit(protocol.event("input_audio_buffer.committed", item_id=item.id, previous_item_id=self.previous_item))
        self.previous_item = item.id
        self.commits.put_nowait(item)

    # --- decoding ----------------------------------------------------------------------------------
    def _maybe_speculate(self) -> None:
        """Start the final decode of the current utterance once the speaker has been quiet SPECULATE_S."""
        item, vad = self.item, self.vad
        if item is None or vad is None or self.entry is None:
            return
        quiet = vad.quiet_from if vad.speaking else None
        if item.speculation is not None and item.quiet_from != quiet:
            item.speculation = None  # speech came back: that guess is void (its thread finishes unread)
        wait = min(SPECULATE_S, vad.options.silence_duration_ms / 2000)
        if quiet is None or item.speculation is not None or self.timeline.end - quiet < wait * RATE:
            return
        if quiet <= item.start or sum(not t.done() for t in self.speculations) >= 2:
            return  # a voided one may still run (a decode cannot be stopped midway); bound them
        item.quiet_from = quiet
        samples = self.timeline.slice(item.start, self.timeline.end)

        def wanted() -> bool:  # voided while it waited for a decode slot: skip it, free
            return item.speculation is not None and item.quiet_from == quiet

        task = asyncio.create_task(
            self._decode(samples, item.start / RATE, final=True, prefix=item.agreement.text, wanted=wanted)
        )
        item.speculation = task
        self.stats["speculative"] += 1
        self.speculations.add(task)
        task.add_done_callback(self.speculations.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a voided one's error is nobody's

    def _maybe_partial(self) -> None:
        item = self.item
        if item is None or self.entry is None or (item.partial is not None and not item.partial.done()):
            return
        if item.speculation is not None or (self.vad is not None and self.vad.quiet_from is not None):
            return  # the speaker paused: the final decode may start any moment, partials would slow it
        # at most half the wall time re-decoding: on a slow or busy machine partials come less often
        # rather than delaying the final text they would compete with
        gap = max(self.settings.live_partial_interval, 2 * self.partial_cost)
        if self.timeline.end - item.decoded_at < gap * RATE:
            return
        if self.m.decode_slots.locked():  # partials are best effort: never queue behind a final decode
            return
        item.decoded_at = self.timeline.end
        item.partial = asyncio.create_task(self._partial(item, self.timeline.slice(item.start, self.timeline.end)))
        self.partials.add(item.partial)
        item.partial.add_done_callback(self.partials.discard)

    async def _partial(self, item: Item, samples: np.ndarray) -> None:
        try:
            text, _, language = await self._decode(samples, 0.0, final=False, prefix=item.agreement.text)
            if len(samples) >= 2 * RATE:  # detected once per session (from 2 s on), not at every decode
                self.language = self.language or language
        except Exception as exc:  # noqa: BLE001  # a partial is best effort; the final decode reports failures
            log.warning("live_partial_failed", extra={"session": self.id, "error": type(exc).__name__})
            return
        if item.done or item.speculation is not None:  # the final decode took the stable text as it was
            return
        delta = item.agreement.update(text)
        if delta:
            self.emit(protocol.event("conversation.item.input_audio_transcription.delta", item_id=item.id,
                                     content_index=0, delta=delta))  # fmt: skip

    async def _decode(
        self, samples: np.ndarray, offset: float, final: bool, prefix: str, wanted: Callable[[], bool] | None = None
    ) -> Decoded:
        assert self.entry is not None
        t0 = time.perf_counter()
        async with self.m.decode_slots:
            if wanted is not None and not wanted():
                raise Voided
            out = await asyncio.to_thread(
                transcriber.decode_utterance, self.entry.model, samples, offset=offset,
                language=self.cfg.language or self.language, prompt=self.cfg.prompt,
                beam_size=self.settings.live_beam_size, final=final, first_seq=self.seq, prefix=prefix,
            )  # fmt: skip
        took = time.perf_counter() - t0
        self.stats["decode_s"] += took
        if final:
            self.stats["final_max_s"] = max(self.stats["final_max_s"], took)
        else:
            self.stats["partials"] += 1
            self.partial_cost = took if not self.partial_cost else 0.5 * (self.partial_cost + took)
        return out

    async def finisher(self) -> None:
        """Decode committed utterances in order: store their segments, then send `completed`."""
        while (item := await self.commits.get()) is not None:
            await self._finish_item(item)

    async def _finish_item(self, item: Item) -> None:
        samples, item.samples = item.samples, np.zeros(0, dtype=np.float32)
        job_id = self.job_id
        assert job_id is not None  # audio is refused before session.update made the job
        try:
            decoded = await self._speculated(item)
            if decoded is None:
                decoded = await self._decode(samples, item.start / RATE, final=True, prefix=item.agreement.text)
            text, segments, language = decoded
            await self._store_audio(np.zeros(0, dtype=np.int16), sync=True)  # the utterance's audio is durable
            self.language = self.language or language
            for seg in segments:
                seg.seq = self.seq  # numbered here: a speculative decode ran before the previous one was stored
                if seg.text.strip() and not await queries.insert_segment(
                    self.m.pool, job_id, self.m.owner, asdict(seg)
                ):
                    raise errors.AsrError("the session's job is no longer this server's")
                self.seq += 1
        except Exception as exc:  # noqa: BLE001  # any failure is the client's `failed` event, and logged
            log.warning("live_utterance_failed", extra={"session": self.id, "error": type(exc).__name__})
            self.emit(protocol.event("conversation.item.input_audio_transcription.failed", item_id=item.id,
                                     content_index=0, error={"type": "server_error", "code": "transcription_failed",
                                     "message": "the utterance could not be transcribed", "param": None}))  # fmt: skip
            return
        self.stats["utterances"] += 1
        rest = item.agreement.finish(text)
        if rest:
            self.emit(protocol.event("conversation.item.input_audio_transcription.delta", item_id=item.id,
                                     content_index=0, delta=rest))  # fmt: skip
        self.emit(protocol.event("conversation.item.input_audio_transcription.completed", item_id=item.id,
                                 content_index=0, transcript=text,
                                 usage={"type": "duration", "seconds": round(len(samples) / RATE, 3)}))  # fmt: skip
        if self.job_id is not None:
            with contextlib.suppress(Exception):
                await self.m.hub.notify(self.job_id)

    async def _speculated(self, item: Item) -> Decoded | None:
        """The speculative final decode of `item`, if it holds (None: decode it now)."""
        task = item.speculation  # kept on the item until done: it checks that it is still wanted
        if task is None:
            return None
        try:
            decoded = await task
        except Exception as exc:  # noqa: BLE001  # decoded again by the caller, which reports a failure
            log.warning("live_speculation_failed", extra={"session": self.id, "error": type(exc).__name__})
            return None
        finally:
            item.speculation = None
        self.stats["speculative_hits"] += 1
        return decoded

    # --- the end -----------------------------------------------------------------------------------
    def wrap_up(self) -> None:
        """Commit pending speech and tell the finisher that nothing more comes."""
        if self.item is not None and self.timeline.end - self.item.start >= MIN_COMMIT_S * RATE:
            self._commit(self.timeline.end)
        self.commits.put_nowait(None)

    async def close_job(self) -> None:
        """Flush the audio and mark the job completed (after the finisher ended)."""
        if self.audio is None or self.job_id is None:
            return
        await self._store_audio(self.decoder.flush(), sync=True)
        async with self.disk:
            await asyncio.to_thread(self.audio.close)
        self.job_closed = True
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
