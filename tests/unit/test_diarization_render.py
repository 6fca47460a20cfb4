"""Speakers onto segments and words, every rendering, and the request fields (pure, in-process)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from asr_daemon import jobs
from asr_daemon.diarization import render, request, step
from asr_daemon.diarization.engine import Params, Turn
from asr_daemon.jobs import speakers
from tests import rows

TURNS = [Turn(0.0, 4.0, 0), Turn(4.2, 8.0, 1), Turn(8.3, 10.0, 0)]
JOB = rows.job(
    options={"task": "transcribe", "word_timestamps": True, "diarization": {}},
    duration_s=10.0,
    language="en",
    language_probability=0.99,
    filename="meeting notes.wav",
)


def _seg(
    seq: int, start: float, end: float, text: str, words: list[tuple[float, float, str]] | None = None
) -> jobs.Segment:
    return rows.segment(
        seq=seq,
        start_s=start,
        end_s=end,
        text=text,
        tokens=[1, 2],
        temperature=0.0,
        avg_logprob=-0.2,
        compression_ratio=1.1,
        no_speech_prob=0.01,
        words=[{"start": s, "end": e, "word": w, "probability": 0.9} for s, e, w in words] if words else None,
    )


def test_segment_takes_the_speaker_it_overlaps_most() -> None:
    """Without words a segment gets the speaker of its largest overlap; between turns, the nearest one."""
    sp = render.Speakers(TURNS)
    segs = sp.segments([_seg(0, 0.5, 4.6, " Hello there."), _seg(1, 4.1, 7.9, " Hi."), _seg(2, 8.2, 8.26, " Ok")])
    assert [s.speaker for s in segs] == [0, 1, 0]
    assert render.Speakers([]).segments([_seg(0, 0, 1, "x")])[0].speaker is None


def test_words_split_a_segment_where_the_speaker_changes() -> None:
    """With word timestamps a segment spanning two turns becomes two, each word with its own speaker."""
    words = [(3.0, 3.5, " yes"), (3.5, 3.9, " indeed."), (4.3, 4.8, " Well"), (4.8, 5.2, " no.")]
    sp = render.Speakers(TURNS, {"B": "Bob"})
    segs = sp.segments([_seg(0, 3.0, 5.2, " yes indeed. Well no.", words)])
    assert [(s.seg.seq, s.speaker, s.seg.text) for s in segs] == [(0, 0, " yes indeed."), (1, 1, " Well no.")]
    assert (segs[1].seg.start_s, segs[1].seg.end_s) == (4.3, 5.2)
    body = render.verbose(JOB, segs, sp)
    assert [s["speaker"] for s in body["segments"]] == ["A", "Bob"]
    assert [w["speaker"] for w in body["words"]] == ["A", "A", "Bob", "Bob"]


def test_segments_carry_their_label_beside_a_name_that_looks_like_another_label() -> None:
    """`speaker_label` stays the label when A is named "B" and B "A" (the page renames by label)."""
    sp = render.Speakers(TURNS, {"A": "B", "B": "A"})
    segs = sp.segments([_seg(0, 0.5, 4.0, " Hello."), _seg(1, 4.3, 7.9, " Hi.")])
    body = render.verbose(JOB, segs, sp)
    assert [(s["speaker"], s["speaker_label"]) for s in body["segments"]] == [("B", "A"), ("A", "B")]
    assert sp.who(segs[1].seg) == ("B", "A")
    assert render.Speakers([]).who(segs[0].seg) is None


def test_every_format_carries_names() -> None:
    """diarized_json, vtt, srt, text, json turns and rttm all use labels, or the names given."""
    sp = render.Speakers(TURNS, {"A": "Alice"})
    segs = sp.segments([_seg(0, 0.5, 3.9, " Hello."), _seg(1, 4.3, 7.9, " Hi."), _seg(2, 8.4, 9.9, " Bye.")])
    dj = render.diarized_json(JOB, segs, sp)
    assert [(s["id"], s["speaker"], s["text"]) for s in dj["segments"]] == [
        ("seg_0", "Alice", "Hello."),
        ("seg_1", "B", "Hi."),
        ("seg_2", "Alice", "Bye."),
    ]
    assert dj["task"] == "transcribe" and dj["duration"] == 10.0 and dj["text"] == "Hello. Hi. Bye."
    assert all(s["type"] == "transcript.text.segment" for s in dj["segments"])
    assert "<v Alice>Hello." in render.vtt(segs, sp) and "<v B>Hi." in render.vtt(segs, sp)
    assert "Alice: Hello." in render.srt(segs, sp)
    assert render.text(segs, sp) == "Alice: Hello.\nB: Hi.\nAlice: Bye.\n"
    turns = render.turns_json(JOB, sp)
    assert turns["num_speakers"] == 2 and turns["segments"][1] == {"start": 4.2, "end": 8.0, "speaker": "B"}
    rttm = render.rttm(JOB, sp).splitlines()
    assert rttm[0] == "SPEAKER meeting_notes 1 0.000 4.000 <NA> <NA> Alice <NA> <NA>"
    assert len(rttm) == 3


def test_odd_names_and_text_cannot_forge_cues_or_lines() -> None:
    """A name or a text with newlines, `-->` or markup stays inside its own cue (SRT, VTT), paragraph
    (text) and line (RTTM): no forged cue, no lost text, VTT markup escaped."""
    forged = "Eve\n\n99\n00:00:00,000 --> 01:00:00,000\nINJECTED CUE"
    sp = render.Speakers(TURNS, {"A": forged, "B": "Dr. <Who> & co"})
    texts = [" I <3 this --> and that.", " Hi\n\nthere.", " Bye."]
    times = [(0.5, 3.9), (4.3, 7.9), (8.4, 9.9)]
    segs = sp.segments([_seg(i, a, b, t) for i, ((a, b), t) in enumerate(zip(times, texts, strict=True))])
    srt = render.srt(segs, sp)
    assert srt.count(" --> ") == 3 and [b.split("\n")[0] for b in srt.strip().split("\n\n")] == ["1", "2", "3"]
    assert [ln for ln in srt.splitlines() if "-->" in ln and "01:00:00" in ln] == []  # no forged timing line
    assert "INJECTED CUE: I <3 this -> and that." in srt  # the name is kept, on its cue's one line
    vtt = render.vtt(segs, sp)
    cues = vtt.removeprefix("WEBVTT\n\n").strip().split("\n\n")
    assert len(cues) == 3 and all(len(c.split("\n")) == 2 and c.count("-->") == 1 for c in cues), cues
    assert "<v Dr. &lt;Who&gt; &amp; co>Hi there." in vtt and "I &lt;3 this -&gt; and that." in vtt
    assert vtt.count("<") == vtt.count("<v ")
    assert len(render.text(segs, sp).splitlines()) == 3
    rttm = render.rttm(JOB, sp).splitlines()
    assert len(rttm) == 3 and all(len(line.split()) == 10 for line in rttm), rttm


def test_speaker_names_are_one_line_and_tell_speakers_apart() -> None:
    """A name's whitespace runs become one space; control characters, empty and over-long names are
    refused; two speakers shown under one name (case aside, labels included) are found."""
    assert speakers.clean_name("  Bob\n\tSmith\u2028Jr ") == "Bob Smith Jr"
    assert [speakers.clean_name(n) for n in ("", " \n ", "a\x07b", "x" * 101)] == [None] * 4
    assert speakers.clean_name("x" * 100) == "x" * 100
    assert speakers.shared_name({"A": "Alice", "B": "alice"}) == ("A", "B", "alice")
    assert speakers.shared_name({"A": "B", "B": "B"}) == ("A", "B", "B")
    assert speakers.shared_name({"A": "B", "B": "A"}) is None  # a swap


def _req(form: dict[str, list[str]], fmt: str = "json") -> jobs.Request:
    base = jobs.parse_request({**form, "response_format": [fmt]}, jobs.Task.TRANSCRIBE)
    return request.parse(form, base)


def test_request_fields_are_validated() -> None:
    """Counts 1..32, min ≤ max, num within them, paired known speakers; diarized_json implies diarize."""
    assert _req({}).options.diarization is None
    assert _req({}, "diarized_json").options.diarization == jobs.DiarizationOptions()
    assert _req({"diarize": ["true"], "num_speakers": ["3"]}).options.diarization == jobs.DiarizationOptions(3)
    named = _req({"diarize": ["true"], "known_speaker_names[]": [" Ann\n"], "known_speaker_references[]": ["data:x"]})
    assert named.options.diarization == jobs.DiarizationOptions(known=(jobs.KnownSpeaker("Ann", reference="data:x"),))
    for bad in (
        {"diarize": ["true"], "num_speakers": ["0"]},
        {"diarize": ["true"], "num_speakers": ["1000"]},
        {"diarize": ["true"], "num_speakers": ["2.5"]},
        {"diarize": ["true"], "min_speakers": ["4"], "max_speakers": ["2"]},
        {"diarize": ["true"], "num_speakers": ["1"], "min_speakers": ["2"]},
        {"diarize": ["sometimes"]},
        {"num_speakers": ["2"]},
        {"diarize": ["true"], "known_speaker_names[]": ["A"]},
        {"diarize": ["true"], "known_speaker_names[]": ["A", "A"], "known_speaker_references[]": ["x", "y"]},
        {"diarize": ["true"], "known_speaker_names[]": [" "], "known_speaker_references[]": ["x"]},
        {"diarize": ["true"], "known_speaker_names[]": ["Ann", "ann"], "known_speaker_references[]": ["x", "y"]},
        {"diarize": ["true"], "known_speaker_names[]": ["B"], "known_speaker_references[]": ["x"]},
        {"diarize": ["true"], "known_speaker_names[]": ["Ann\x07"], "known_speaker_references[]": ["x"]},
    ):
        with pytest.raises(jobs.Invalid):
            _req(bad)
    opts = _req({"diarize": ["true"], "num_speakers": ["2"]}).options
    assert jobs.Options.from_json(opts.to_json()) == opts
    assert opts.fingerprint("m", "a") != _req({"diarize": ["true"]}).options.fingerprint("m", "a")


def test_known_speakers_match_the_closest_cluster_once() -> None:
    """Each known voice names at most one cluster, best similarity first, and only above the threshold."""
    rng = np.random.default_rng(3)
    a, b, c = (v / np.linalg.norm(v) for v in rng.standard_normal((3, 256)))
    near_a = a + 0.02 * rng.standard_normal(256)
    near_a /= np.linalg.norm(near_a)
    names = step.match_known({0: a, 1: b}, [("Ann", near_a), ("Cid", c)])
    assert names == {"A": "Ann"}
    assert step.match_known({0: a, 1: a}, [("Ann", near_a)]) in ({"A": "Ann"}, {"B": "Ann"})


def test_the_step_reads_counts_and_known_voices_from_typed_options() -> None:
    """The engine's parameters and the known voices (unit vectors) come from `DiarizationOptions`; a speaker
    never embedded is left out rather than failing the job."""
    v = np.array([3.0, 4.0], dtype=np.float16)
    blob = base64.b64encode(v.tobytes()).decode()
    spec = jobs.DiarizationOptions(
        min_speakers=2, max_speakers=4, known=(jobs.KnownSpeaker("Ann", embedding=blob), jobs.KnownSpeaker("Bo"))
    )
    assert step.params(spec) == Params(None, 2, 4)
    [(name, unit)] = request.known_vectors(spec)
    assert name == "Ann" and np.allclose(unit, [0.6, 0.8], atol=1e-3)
