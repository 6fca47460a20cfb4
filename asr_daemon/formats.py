"""Render a stored transcript as json, text, srt, vtt or verbose_json (OpenAI's shapes)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from asr_daemon.jobs import ResponseFormat

MEDIA_TYPES = {
    ResponseFormat.JSON: "application/json",
    ResponseFormat.VERBOSE_JSON: "application/json",
    ResponseFormat.TEXT: "text/plain; charset=utf-8",
    ResponseFormat.SRT: "application/x-subrip; charset=utf-8",
    ResponseFormat.VTT: "text/vtt; charset=utf-8",
}

Seg = Any  # an asyncpg Record or a dict: anything indexable by column name


def text_of(segments: Sequence[Seg]) -> str:
    """The whole transcript as one string, as faster-whisper's segments join."""
    return "".join(s["text"] for s in segments).strip()


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(segments: Sequence[Seg]) -> str:
    """SubRip subtitles."""
    blocks = [
        f"{i}\n{_clock(s['start_s'], ',')} --> {_clock(s['end_s'], ',')}\n{s['text'].strip()}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(blocks)


def vtt(segments: Sequence[Seg]) -> str:
    """WebVTT subtitles."""
    blocks = [f"{_clock(s['start_s'], '.')} --> {_clock(s['end_s'], '.')}\n{s['text'].strip()}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def segment_json(s: Seg) -> dict[str, Any]:
    """One segment in OpenAI's verbose_json shape."""
    return {
        "id": s["seq"],
        "seek": 0,
        "start": round(s["start_s"], 3),
        "end": round(s["end_s"], 3),
        "text": s["text"],
        "tokens": list(s["tokens"] or []),
        "temperature": s["temperature"],
        "avg_logprob": s["avg_logprob"],
        "compression_ratio": s["compression_ratio"],
        "no_speech_prob": s["no_speech_prob"],
    }


def verbose(job: Mapping[str, Any], segments: Sequence[Seg]) -> dict[str, Any]:
    """OpenAI's verbose_json: language, duration, segments, and words when they were asked for."""
    options = job["options"] or {}
    out: dict[str, Any] = {
        "task": options.get("task", "transcribe"),
        "language": job["language"],
        "language_probability": job["language_probability"],
        "duration": job["duration_s"],
        "text": text_of(segments),
        "segments": [segment_json(s) for s in segments],
    }
    if options.get("word_timestamps"):
        out["words"] = [w for s in segments for w in (s["words"] or [])]
    return out


def render(fmt: ResponseFormat, job: Mapping[str, Any], segments: Sequence[Seg]) -> tuple[str, str]:
    """(body, media type) of a transcript in format `fmt`."""
    if fmt is ResponseFormat.JSON:
        body = json.dumps({"text": text_of(segments)}, ensure_ascii=False)
    elif fmt is ResponseFormat.VERBOSE_JSON:
        body = json.dumps(verbose(job, segments), ensure_ascii=False)
    elif fmt is ResponseFormat.TEXT:
        body = text_of(segments) + "\n"
    elif fmt is ResponseFormat.SRT:
        body = srt(segments)
    else:
        body = vtt(segments)
    return body, MEDIA_TYPES[fmt]
