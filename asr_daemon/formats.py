"""Render a stored transcript as json, text, srt, vtt or verbose_json (OpenAI's shapes).

The two JSON shapes are msgspec Structs: the API's OpenAPI schema is generated from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from asr_daemon.jobs import Job, ResponseFormat, Task
from asr_daemon.jobs import Segment as Stored  # a stored segment; `Segment` below is its verbose_json shape

MEDIA_TYPES = {
    ResponseFormat.JSON: "application/json",
    ResponseFormat.VERBOSE_JSON: "application/json",
    ResponseFormat.TEXT: "text/plain",  # Litestar adds "; charset=utf-8" to every text/ type
    ResponseFormat.SRT: "application/x-subrip; charset=utf-8",
    ResponseFormat.VTT: "text/vtt",
    ResponseFormat.DIARIZED_JSON: "application/json",
    ResponseFormat.RTTM: "text/plain",
}


def timestamp(moment: datetime) -> str:
    """RFC 3339, exactly as msgspec writes the API's datetimes (`...Z` in UTC): for the JSON built by hand."""
    return msgspec.json.encode(moment).decode()[1:-1]


def seconds(value: float) -> float:
    """A time in seconds rounded to the millisecond, as every answer shows times (API, SSE, webhooks,
    CLI): `59.952`, never `59.952000000001384`."""
    return round(value, 3)


def round_times(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with each float under a key ending in `_s` (and inside `timings`) rounded to the
    millisecond, nested dicts and lists included; other values as they are."""

    def fix(key: str, value: Any, timing: bool) -> Any:
        if isinstance(value, float) and (timing or key.endswith("_s")):
            return seconds(value)
        if isinstance(value, Mapping):
            return {k: fix(str(k), v, timing or key == "timings") for k, v in value.items()}
        if isinstance(value, list):
            return [fix(key, v, timing) for v in value]
        return value

    return {k: fix(k, v, False) for k, v in data.items()}


def text_of(segments: Sequence[Stored]) -> str:
    """The whole transcript as one string, as faster-whisper's segments join."""
    return "".join(s.text for s in segments).strip()


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cue_text(text: str) -> str:
    """Text as one line of a subtitle cue: runs of whitespace as one space (a blank line would end the
    cue), and "-->" (what marks a timing line) as "->"."""
    return " ".join(text.split()).replace("-->", "->")


def _vtt_escaped(text: str) -> str:
    """WebVTT cue text is markup: `&`, `<` and `>` as character references."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def srt(segments: Sequence[Stored]) -> str:
    """SubRip subtitles."""
    blocks = [
        f"{i}\n{_clock(s.start_s, ',')} --> {_clock(s.end_s, ',')}\n{cue_text(s.text)}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(blocks)


def vtt(segments: Sequence[Stored], voices: Sequence[str | None] | None = None) -> str:
    """WebVTT subtitles; with `voices`, each segment's speaker (or None) as a voice tag (`<v Name>`)."""
    who = voices if voices is not None else [None] * len(segments)
    blocks = [
        f"{_clock(s.start_s, '.')} --> {_clock(s.end_s, '.')}\n"
        + (f"<v {_vtt_escaped(cue_text(v))}>" if v else "")
        + f"{_vtt_escaped(cue_text(s.text))}\n"
        for s, v in zip(segments, who, strict=True)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


class Transcription(msgspec.Struct):
    """`response_format=json`: the text alone."""

    text: str


class Word(msgspec.Struct):
    """One word with its times in the file (seconds) and Whisper's confidence."""

    start: float
    end: float
    word: str
    probability: float


class Segment(msgspec.Struct):
    """One segment in OpenAI's verbose_json shape (`seek` is always 0: times are absolute)."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float | None
    avg_logprob: float | None
    compression_ratio: float | None
    no_speech_prob: float | None


class VerboseTranscription(msgspec.Struct, omit_defaults=True):
    """`response_format=verbose_json`: language, duration, segments, and words when asked for."""

    task: Task
    language: str | None
    language_probability: float | None
    duration: float
    text: str
    segments: list[Segment]
    #: present only when the request asked for word timestamps
    words: list[Word] | None = None


def segment_json(s: Stored) -> Segment:
    """One stored segment in OpenAI's verbose_json shape."""
    return Segment(
        id=s.seq,
        seek=0,
        start=round(s.start_s, 3),
        end=round(s.end_s, 3),
        text=s.text,
        tokens=list(s.tokens),
        temperature=s.temperature,
        avg_logprob=s.avg_logprob,
        compression_ratio=s.compression_ratio,
        no_speech_prob=s.no_speech_prob,
    )


def verbose(job: Job, segments: Sequence[Stored]) -> VerboseTranscription:
    """OpenAI's verbose_json: language, duration, segments, and words when they were asked for."""
    words = None
    if job.options.word_timestamps:
        words = [Word(w["start"], w["end"], w["word"], w["probability"]) for s in segments for w in s.words]
    return VerboseTranscription(
        task=job.options.task,
        language=job.language,
        language_probability=job.language_probability,
        duration=seconds(job.duration_s or 0.0),
        text=text_of(segments),
        segments=[segment_json(s) for s in segments],
        words=words,
    )


def render(fmt: ResponseFormat, job: Job, segments: Sequence[Stored]) -> tuple[str, str]:
    """(body, media type) of a transcript in format `fmt`."""
    if fmt is ResponseFormat.JSON:
        body = msgspec.json.encode(Transcription(text_of(segments))).decode()
    elif fmt is ResponseFormat.VERBOSE_JSON:
        body = msgspec.json.encode(verbose(job, segments)).decode()
    elif fmt is ResponseFormat.TEXT:
        body = text_of(segments) + "\n"
    elif fmt is ResponseFormat.SRT:
        body = srt(segments)
    else:
        body = vtt(segments)
    return body, MEDIA_TYPES[fmt]
