"""The decoding half of a live session: partial re-decodes, the speculative final decode, the finisher.

`Decoding` is mixed into `LiveSession` (live/session.py, which holds the events, audio and job) and
uses its state. Partial decodes run one at a time per utterance over a short encoder window
(live/window.py) and feed the stable-prefix policy (live/agreement.py); they start as soon as an
utterance has begun and then again whenever `partial_due` says so: the audio grown since the last one
began is at least `live_partial_interval` and at least what a partial decode costs lately (twice that
once the utterance has stable text, so that then partials take at most half the wall time). They
never wait for a decode slot (final decodes go first) and pause while the speaker does. The final
decode of each utterance is faster-whisper's whole one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from asr_daemon import errors, queries
from asr_daemon.engine import models, transcriber
from asr_daemon.live import codec, protocol, window
from asr_daemon.live.agreement import Agreement
from asr_daemon.live.protocol import SessionConfig
from asr_daemon.live.timeline import Timeline
from asr_daemon.live.vad import StreamingVad

if TYPE_CHECKING:
    import uuid

    from asr_daemon.config import Settings
    from asr_daemon.live.manager import LiveManager

log = logging.getLogger(__name__)

RATE = codec.RATE

#: Seconds of quiet after speech before the utterance's final decode starts speculatively (at most
#: half of `silence_duration_ms`): a pause between words shorter than this costs no decode.
SPECULATE_S = 0.15


Decoded = tuple[str, list[transcriber.Segment], str | None]
T = TypeVar("T")


async def to_thread_to_its_end(fn: Callable[..., T], /, *args: Any, **kw: Any) -> T:
    """`asyncio.to_thread`, except that a cancelled caller still waits for the thread: a decode cannot be
    stopped, and until it ends it holds its decode slot and the session's model (a session that ended
    while one ran gave both back, and another session's decode ran beside it)."""
    thread = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kw))
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await thread
        raise


class Voided(Exception):
    """A speculative decode no longer wanted when its turn came."""


#: Audio that must grow between two partial decodes, in multiples of a partial decode's recent cost:
#: until the utterance has stable text, the next decode starts as soon as the previous one returned
#: (the first delta needs two decodes that agree); then partials take at most half the wall time.
PARTIAL_SHARE_FIRST = 1.0
PARTIAL_SHARE = 2.0


def partial_due(grown_s: float, interval: float, cost: float, stable: bool) -> bool:
    """Whether the next partial decode may start, `grown_s` seconds of audio after the last one began
    (`cost`: what a partial decode takes lately; `stable`: the utterance has stable text already)."""
    return grown_s >= max(interval, (PARTIAL_SHARE if stable else PARTIAL_SHARE_FIRST) * cost)


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


class Decoding:
    """Partial, speculative and final decodes of a `LiveSession` (see the module's docstring)."""

    m: LiveManager
    settings: Settings
    id: str
    cfg: SessionConfig
    entry: models.Loaded | None
    vad: StreamingVad | None
    timeline: Timeline
    item: Item | None
    seq: int
    language: str | None
    job_id: uuid.UUID | None
    commits: asyncio.Queue[Item | None]
    backlog: int
    room: asyncio.Event
    stats: dict[str, float]
    partials: set[asyncio.Task[None]]
    speculations: set[asyncio.Task[Decoded]]
    partial_cost: float
    #: Utterances whose final decode failed: from the first on no segment is stored (the stored ones stay a
    #: gap-free prefix) and the closed job is queued for a worker, which transcribes the rest of the audio.
    failed: int = 0

    def _new_item(self, start: int) -> Item:
        """A new utterance at stream position `start`. A multilingual model's first words need three
        agreeing decodes (base agreed twice on "Why do you want your country" for jfk.flac's "What your
        country" from its first second, and the final kept it); an English-only one's two, as before."""
        multilingual = self.entry is not None and bool(self.entry.model.model.is_multilingual)
        return Item(protocol.new_id("item"), start, Agreement(first_votes=3 if multilingual else 2), decoded_at=start)

    def emit(self, ev: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _store_audio(self, pcm: np.ndarray, sync: bool = False) -> None:
        raise NotImplementedError

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
        grown = (self.timeline.end - item.decoded_at) / RATE
        if not partial_due(grown, self.settings.live_partial_interval, self.partial_cost, bool(item.agreement.stable)):
            return
        if self.m.decode_slots.locked():  # partials are best effort: never queue behind a final decode
            return
        item.decoded_at = self.timeline.end
        item.partial = asyncio.create_task(self._partial(item, self.timeline.slice(item.start, self.timeline.end)))
        self.partials.add(item.partial)
        item.partial.add_done_callback(self.partials.discard)

    async def _partial(self, item: Item, samples: np.ndarray) -> None:
        try:
            text, language = await self._decode_partial(samples, prefix=item.agreement.text)
            if len(samples) >= 2 * RATE:  # detected once per session (from 2 s on), not at every decode
                self.language = self.language or language
        except Exception as exc:  # noqa: BLE001  # a partial is best effort; the final decode reports failures
            log.warning("live_partial_failed", extra={"session": self.id, "error": type(exc).__name__})
            return
        if item.done or item.speculation is not None or text is None:  # the final decode took the stable
            return  # text as it was; or the decode was unsure of its words (no vote)
        delta = item.agreement.update(text)
        if delta:
            self.emit(protocol.event("conversation.item.input_audio_transcription.delta", item_id=item.id,
                                     content_index=0, delta=delta))  # fmt: skip

    async def _decode_partial(self, samples: np.ndarray, prefix: str) -> tuple[str | None, str | None]:
        """A greedy decode over a short window, guarded (live/window.py): its text feeds the agreement."""
        assert self.entry is not None
        t0 = time.perf_counter()
        async with self.m.decode_slots:
            text, language = await to_thread_to_its_end(
                window.decode_partial, self.entry.model, samples, language=self.cfg.language or self.language,
                prompt=self.cfg.prompt, prefix=prefix,
            )  # fmt: skip
        took = time.perf_counter() - t0
        self.stats["decode_s"] += took
        self.stats["partials"] += 1
        self.partial_cost = took if not self.partial_cost else 0.5 * (self.partial_cost + took)
        return text, language

    async def _final(self, samples: np.ndarray, item: Item) -> Decoded:
        """`item`'s final decode; one that raises is tried once more plainly (no stable prefix, no prompt)."""
        try:
            return await self._decode(samples, item.start / RATE, final=True, prefix=item.agreement.text)
        except Exception as exc:  # noqa: BLE001  # the retry's own failure is the caller's to report
            log.warning("live_final_decode_retried", extra={"session": self.id, "error": type(exc).__name__})
        return await self._decode(samples, item.start / RATE, final=True, prefix="", plain=True)

    async def _decode(
        self, samples: np.ndarray, offset: float, final: bool, prefix: str, wanted: Callable[[], bool] | None = None,
        plain: bool = False,
    ) -> Decoded:  # fmt: skip
        """An utterance's final decode (faster-whisper's whole one, beam `live_beam_size`), timed; `plain`:
        without the session prompt."""
        assert self.entry is not None
        t0 = time.perf_counter()
        async with self.m.decode_slots:
            if wanted is not None and not wanted():
                raise Voided
            out = await to_thread_to_its_end(
                transcriber.decode_utterance, self.entry.model, samples, offset=offset,
                language=self.cfg.language or self.language, prompt=None if plain else self.cfg.prompt,
                beam_size=self.settings.live_beam_size, final=final, first_seq=self.seq, prefix=prefix,
            )  # fmt: skip
        took = time.perf_counter() - t0
        self.stats["decode_s"] += took
        self.stats["final_max_s"] = max(self.stats["final_max_s"], took)
        return out

    async def finisher(self) -> None:
        """Decode committed utterances in order: store their segments, then send `completed`."""
        while (item := await self.commits.get()) is not None:
            try:
                await self._finish_item(item)
            finally:
                self.backlog -= item.end - item.start
                if self.backlog <= self.settings.live_max_buffer_s * RATE:
                    self.room.set()

    async def _finish_item(self, item: Item) -> None:
        samples, item.samples = item.samples, np.zeros(0, dtype=np.float32)
        job_id = self.job_id
        assert job_id is not None  # audio is refused before session.update made the job
        try:
            decoded = await self._speculated(item)
            if decoded is None:
                decoded = await self._final(samples, item)
            text, segments, language = decoded
            await self._store_audio(np.zeros(0, dtype=np.int16), sync=True)  # the utterance's audio is durable
            self.language = self.language or language
            for seg in segments if not self.failed else ():  # after a gap the worker stores the rest
                seg.seq = self.seq  # numbered here: a speculative decode ran before the previous one was stored
                if seg.text.strip() and not await queries.insert_segment(
                    self.m.pool, job_id, self.m.owner, asdict(seg)
                ):
                    raise errors.AsrError("the session's job is no longer this server's")
                self.seq += 1
        except Exception as exc:  # noqa: BLE001  # any failure is the client's `failed` event, and logged
            self.failed += 1  # the job is not completed with this utterance missing: a worker redoes the rest
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
