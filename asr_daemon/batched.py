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
#: Rounds of re-decoding a chunk's rest.
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
    language is given, runs on the first batch's chunks."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model)
    spans = chunks(samples)
    kw = {k: v for k, v in kw.items() if k not in ("initial_prompt", "vad_filter")}
    kw["without_timestamps"] = False
    first = spans[:batch_size] or [(0.0, min(len(samples) / SAMPLE_RATE, CHUNK_S))]
    segs, info = pipeline.transcribe(samples, clip_timestamps=_clips(first), batch_size=batch_size, **kw)
    kw["language"] = info.language

    def run() -> Iterator[Any]:
        pending: Iterator[Any] | None = segs
        for i in range(0, max(len(spans), 1), batch_size):
            group = spans[i : i + batch_size] or first
            got = list(pending) if pending is not None else _decode(pipeline, samples, group, batch_size, kw)
            pending = None
            for _ in range(REST_ROUNDS):
                rests = _rests(group, got)
                if not rests:
                    break
                got += _decode(pipeline, samples, rests, batch_size, kw)
                group = rests
            yield from sorted(got, key=lambda s: s.start)

    return run(), info


def _clips(spans: list[tuple[float, float]]) -> list[dict[str, float]]:
    return [{"start": s, "end": e} for s, e in spans]


def _decode(pipeline: Any, samples: np.ndarray, spans: list[tuple[float, float]], batch_size: int, kw: Any) -> list[Any]:
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
