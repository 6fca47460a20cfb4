"""Batched transcription of one window: VAD chunks of ≤ 30 s decoded `batch_size` at a time.

faster-whisper's `BatchedInferencePipeline` as it comes (text without timestamps, chunks packed to
30 s of speech, one decode per chunk) drops words on real speech that sequential decoding keeps:
Whisper ends a 30 s chunk early when the voice or the recording changes inside it, and nothing
decodes what it left (measured on real recordings: docs/benchmarks.md, section 11). Here:

- chunks are the VAD's speech regions merged up to `CHUNK_S`, cut at silences, as spans of the
  window (the silences between the regions stay in, so times are the window's own);
- they are decoded with timestamps, so each chunk says how far it got (and segments keep sentence
  times, as the sequential path's do: subtitles and resume points stay fine-grained);
- a chunk whose text stops more than `TAIL_GAP_S` before its end has the rest decoded again, in a
  second batch with the other chunks' rests: sequential decoding's "seek to where the text
  stopped", batched.

Segments come out in time order, a batch of chunks at a time, as faster-whisper `Segment`s with
times in seconds from the window's start.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
#: Longest chunk: Whisper's window.
CHUNK_S = 30.0
#: A chunk's text ending this long before the chunk does gets the rest decoded again.
TAIL_GAP_S = 2.0
#: Shortest rest worth a decode (a breath at the end of a chunk is not).
MIN_REST_S = 1.0
#: Times a chunk's rest may be decoded again.
REST_ROUNDS = 2


def chunks(samples: np.ndarray, max_s: float = CHUNK_S) -> list[tuple[float, float]]:
    """(start, end) seconds of the window's speech, consecutive VAD regions merged up to `max_s`."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions = get_speech_timestamps(samples, VadOptions(max_speech_duration_s=max_s, min_silence_duration_ms=160))
    out: list[tuple[float, float]] = []
    for r in regions:
        start, end = r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE
        if out and end - out[-1][0] <= max_s:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, min(end, start + max_s)))
    return out


def transcribe(model: Any, samples: np.ndarray, batch_size: int, **kw: Any) -> tuple[Iterator[Any], Any]:
    """(segments, info) for one window, like `WhisperModel.transcribe`; `kw` are its options
    (task, language, beam_size, word_timestamps, temperature...). Language detection, when no
    language is given, runs on the first batch's chunks.

    The chunks wait in a queue in time order; each decode takes the first `batch_size` of them, and
    a chunk's undecoded rest goes back to the queue's front, so it fills the next batch beside the
    following chunks instead of costing a decode of its own. A segment is handed out once nothing
    before it is still queued."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model)
    spans = chunks(samples) or [(0.0, min(len(samples) / SAMPLE_RATE, CHUNK_S))]
    kw = {k: v for k, v in kw.items() if k not in ("initial_prompt", "vad_filter", "vad_parameters")}  # own chunks
    kw["without_timestamps"] = False
    queue = [(s, e, 0) for s, e in spans]  # (start, end, rounds of re-decoding so far)
    group, queue = queue[:batch_size], queue[batch_size:]
    segs, info = pipeline.transcribe(
        samples, clip_timestamps=_clips([(s, e) for s, e, _ in group]), batch_size=batch_size, **kw
    )
    kw["language"] = info.language

    def run() -> Iterator[Any]:
        nonlocal group, queue
        got: list[Any] = list(segs)
        held: list[Any] = []
        while True:
            held += got
            rests = [(s, e, r + 1) for (s, e, r) in group for s, e in _rests([(s, e)], got) if r < REST_ROUNDS]
            queue = sorted(rests + queue)
            frontier = queue[0][0] if queue else float("inf")
            ready = _ordered(held)
            done = [x for x in ready if x.start < frontier]
            held = ready[len(done) :]
            yield from done
            if not queue:
                yield from held
                return
            group, queue = queue[:batch_size], queue[batch_size:]
            got = _decode(pipeline, samples, [(s, e) for s, e, _ in group], batch_size, kw)

    return run(), info


def _ordered(segs: list[Any]) -> list[Any]:
    """Segments by start time, each ending no later than the next starts (a timestamp may run a
    few milliseconds past its chunk into the next one)."""
    segs = sorted(segs, key=lambda s: s.start)
    for i, (a, b) in enumerate(itertools.pairwise(segs)):
        if a.end > b.start:
            segs[i] = dataclasses.replace(a, end=max(a.start, b.start))
    return segs


def _clips(spans: list[tuple[float, float]]) -> list[dict[str, float]]:
    return [{"start": s, "end": e} for s, e in spans]


def _decode(
    pipeline: Any, samples: np.ndarray, spans: list[tuple[float, float]], batch_size: int, kw: dict[str, Any]
) -> list[Any]:
    segs, _ = pipeline.transcribe(samples, clip_timestamps=_clips(spans), batch_size=batch_size, **kw)
    return list(segs)


def _rests(spans: list[tuple[float, float]], segs: list[Any]) -> list[tuple[float, float]]:
    """The part of each span after its last segment, where that is over `TAIL_GAP_S`."""
    rests = []
    for start, end in spans:
        reached = max((s.end for s in segs if start - 0.01 <= s.start < end), default=start)
        if end - reached > TAIL_GAP_S and end - reached >= MIN_REST_S:
            rests.append((reached, end))
    return rests
