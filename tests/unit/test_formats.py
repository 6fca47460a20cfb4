"""Rendering stored segments as text, srt, vtt, json and verbose_json."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import msgspec

from asr_daemon import formats
from asr_daemon.jobs import ResponseFormat
from tests import rows

SEGS = [
    rows.segment(
        seq=0,
        start_s=0.0,
        end_s=2.5,
        text=" Hello there.",
        tokens=[1],
        temperature=0.0,
        avg_logprob=-0.2,
        compression_ratio=1.1,
        no_speech_prob=0.01,
        words=[{"start": 0.0, "end": 0.5, "word": " Hello", "probability": 0.9}],
    ),
    rows.segment(
        seq=1,
        start_s=3661.25,
        end_s=3662.0,
        text=" Bye.",
        tokens=[2],
        temperature=0.0,
        avg_logprob=-0.3,
        compression_ratio=1.0,
        no_speech_prob=0.02,
        words=[{"start": 2.0, "end": 2.4, "word": " Bye.", "probability": 0.8}],
    ),
]
JOB = rows.job(
    options={"task": "transcribe", "word_timestamps": True},
    language="en",
    language_probability=0.9,
    duration_s=3662.0,
)


def test_text_and_json_join_segments() -> None:
    """Plain text and json hold the joined, stripped transcript."""
    assert formats.render(ResponseFormat.TEXT, JOB, SEGS)[0] == "Hello there. Bye.\n"
    assert json.loads(formats.render(ResponseFormat.JSON, JOB, SEGS)[0]) == {"text": "Hello there. Bye."}


def test_srt_and_vtt_timestamps() -> None:
    """Subtitle clocks use hours, minutes, seconds and milliseconds with each format's separator."""
    srt, media = formats.render(ResponseFormat.SRT, JOB, SEGS)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\n")
    assert media.startswith("application/x-subrip")
    vtt, _ = formats.render(ResponseFormat.VTT, JOB, SEGS)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")


def test_verbose_json_has_openai_fields_and_words() -> None:
    """verbose_json carries task, language, duration, segments and the words when asked for."""
    body = json.loads(formats.render(ResponseFormat.VERBOSE_JSON, JOB, SEGS)[0])
    assert (body["task"], body["language"], body["duration"]) == ("transcribe", "en", 3662.0)
    assert [s["id"] for s in body["segments"]] == [0, 1] and body["segments"][1]["start"] == 3661.25
    assert [w["word"] for w in body["words"]] == [" Hello", " Bye."]


def test_timestamps_built_by_hand_match_the_api_s_datetimes() -> None:
    """SSE events and webhooks write times exactly as msgspec writes the job's (RFC 3339, `Z`)."""
    moment = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert formats.timestamp(moment) == "2026-01-02T03:04:05.123456Z"
    assert formats.timestamp(moment) == msgspec.json.decode(msgspec.json.encode({"t": moment}))["t"]


def test_times_are_rounded_to_the_millisecond_in_every_answer() -> None:
    """Float noise (59.952000000001384) never reaches verbose_json, the job view, SSE or webhooks."""
    from asr_daemon.api.schemas import job_view
    from asr_daemon.pipeline import events, webhooks

    noisy = 10.999999999999996
    job = dataclasses.replace(JOB, duration_s=noisy)
    body = json.loads(formats.render(ResponseFormat.VERBOSE_JSON, job, SEGS)[0])
    assert body["duration"] == 11.0
    row = rows.job(
        options=JOB.options_json,
        language="en",
        duration_s=noisy,
        model="base",
        filename="x.wav",
        progress_s=noisy,
        device="cpu",
        timings={"transcribe_s": 0.123456, "windows": 1, "nested": {"x_s": 1.00049}},
        created_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
    )
    view = json.loads(msgspec.json.encode(job_view(row)))
    assert view["audio"]["duration_s"] == 11.0 and view["progress"]["duration_s"] == 11.0
    assert view["timings"] == {"transcribe_s": 0.123, "windows": 1, "nested": {"x_s": 1.0}}
    assert webhooks.summary(row)["duration_s"] == 11.0
    assert events.segment_event(row, SEGS[0]).data["duration_s"] == 11.0
