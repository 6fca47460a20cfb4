"""The batched path (`asr_daemon/engine/batched.py` through `transcriber.transcribe`) with the real tiny.en
model: it keeps what the sequential path guarantees (order, resume, stop, word times, windows)."""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from asr_daemon import jobs
from asr_daemon.engine import audio, batched, replicas, transcriber
from tests.conftest import STORY


@pytest.fixture(scope="module")
def model(models_dir: Path) -> object:
    """tiny.en on the CPU."""
    return replicas.load_model(models_dir / "tiny.en", "cpu", "int8", 2, 1)


@pytest.fixture(scope="module")
def story(speech: Callable[..., Path]) -> Path:
    """About 70 s of distinct sentences (each 2 to 6 s long)."""
    return speech(" ".join(STORY))


def run(model: object, path: Path, batch_size: int = 4, **kw: object) -> list[transcriber.Segment]:
    """Transcribe (batched unless told otherwise) and collect the segments."""
    out: list[transcriber.Segment] = []
    options = kw.pop("options", jobs.Options(language="en", temperature=0.0))
    transcriber.transcribe(model, path, options, batch_size=batch_size, on_segment=out.append, **kw)  # type: ignore[arg-type]
    return out


def words(segs: list[transcriber.Segment]) -> list[str]:
    """The transcript's words, lower case, without punctuation."""
    return re.sub(r"[^a-z0-9 ]", " ", " ".join(s.text for s in segs).lower()).split()


def test_batch_size_is_the_requests_then_the_servers_by_length() -> None:
    """A request's batch_size wins (0 forces sequential); else the default applies from the threshold
    on; a prompt always runs sequentially."""
    assert transcriber.batch_for(jobs.Options(), 8, 120, 119.9) == 0
    assert transcriber.batch_for(jobs.Options(), 8, 120, 120) == 8
    assert transcriber.batch_for(jobs.Options(batch_size=0), 8, 120, 3600) == 0
    assert transcriber.batch_for(jobs.Options(batch_size=4), 0, 120, 10) == 4
    assert transcriber.batch_for(jobs.Options(prompt="Acme", batch_size=4), 8, 0, 3600) == 0


def test_batch_size_form_field_is_parsed_and_bounded() -> None:
    """`batch_size` is accepted from 0 to 64 and refused otherwise with a message naming it; unset, it
    leaves the options' stored form (and so deduplication keys) as before."""
    assert jobs.parse_request({"batch_size": ["0"]}, jobs.Task.TRANSCRIBE).options.batch_size == 0
    assert jobs.parse_request({"batch_size": ["16"]}, jobs.Task.TRANSCRIBE).options.batch_size == 16
    for bad in ("65", "-1", "many"):
        with pytest.raises(jobs.Invalid, match="batch_size"):
            jobs.parse_request({"batch_size": [bad]}, jobs.Task.TRANSCRIBE)
    assert "batch_size" not in jobs.Options().to_json()
    assert jobs.Options.from_json(jobs.Options(batch_size=2).to_json()).batch_size == 2


def test_a_chunk_that_stopped_early_has_its_rest_decoded_again() -> None:
    """The rest of a chunk after its last segment is decoded again when it is over 2 s, not otherwise."""

    def seg(start: float, end: float) -> SimpleNamespace:
        return SimpleNamespace(start=start, end=end)  # a decoded segment's times, all `_rests` reads

    spans = [(0.0, 30.0), (31.0, 50.0), (52.0, 60.0)]
    got = [seg(0.0, 10.0), seg(10.0, 22.0), seg(31.0, 49.0)]
    assert batched._rests(spans, got) == [(22.0, 30.0), (52.0, 60.0)]


def test_chunks_are_speech_spans_of_at_most_30_s_in_order(story: Path) -> None:
    """VAD chunks stay within Whisper's 30 s, follow each other and cover the speech."""
    samples = audio.decode(story)
    spans = batched.chunks(samples)
    assert len(spans) >= 3
    assert all(0 < e - s <= batched.CHUNK_S for s, e in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert spans[-1][1] > len(samples) / audio.SAMPLE_RATE - 3


@pytest.mark.slow
def test_batched_windows_cover_the_file_in_order_with_the_sequential_words(model: object, story: Path) -> None:
    """Batched in 30 s windows or one window: ordered segments with sentence times, covering the file,
    with the words of a sequential run (the same espeak speech: all but a few)."""
    seq = run(model, story, batch_size=0, window_s=600)
    for window in (30.0, 600.0):
        segs = run(model, story, window_s=window)
        assert [s.seq for s in segs] == list(range(len(segs)))
        for a, b in itertools.pairwise(segs):
            assert a.end <= b.start + 0.01
        assert segs[-1].end > audio.probe(story).duration - 3
        assert max(s.end - s.start for s in segs) < 15
        match = difflib.SequenceMatcher(a=words(seq), b=words(segs), autojunk=False).ratio()
        assert match > 0.93, (window, " ".join(words(segs)))


@pytest.mark.slow
def test_stopped_and_resumed_at_the_last_segment_loses_and_repeats_no_word(model: object, story: Path) -> None:
    """Stopped mid-file (cancel, drain, kill -9: the stored segments are what is left) and resumed from
    the end of the last segment, the batched run gives the whole file's words, none twice."""
    whole = run(model, story, window_s=600)
    seen: list[transcriber.Segment] = []
    with pytest.raises(transcriber.Stopped):
        transcriber.transcribe(
            model,
            story,
            jobs.Options(language="en", temperature=0.0),
            batch_size=4,
            on_segment=seen.append,
            should_stop=lambda: len(seen) >= len(whole) // 2,
        )
    assert len(seen) == len(whole) // 2
    rest = run(model, story, window_s=600, resume_from=seen[-1].end, first_seq=len(seen))
    assert rest[0].seq == len(seen) and rest[0].start >= seen[-1].end
    resumed = words(seen) + words(rest)
    ops = difflib.SequenceMatcher(a=words(whole), b=resumed, autojunk=False).get_opcodes()
    lost_or_repeated = [op for op in ops if op[0] in ("insert", "delete")]
    assert not lost_or_repeated, [(op, words(whole)[op[1] : op[2]], resumed[op[3] : op[4]]) for op in ops]


@pytest.mark.slow
def test_batched_word_timestamps_are_absolute_and_inside_their_segments(model: object, story: Path) -> None:
    """Word times come with batched segments, in order, inside their segment, in file time after a window."""
    options = jobs.Options(language="en", temperature=0.0, word_timestamps=True)
    segs = run(model, story, window_s=40, options=options)
    assert segs[-1].start > 40
    flat = [w for s in segs for w in s.words or []]
    assert len(flat) >= 0.9 * len(words(segs))
    for s in segs:
        assert s.words, s.text
        assert s.start - 0.5 <= s.words[0]["start"] and s.words[-1]["end"] <= s.end + 0.5
    assert all(a["start"] <= b["start"] for a, b in itertools.pairwise(flat))


@pytest.mark.slow
def test_batched_detects_the_language_once_and_keeps_it(models_dir: Path, speech: Callable[..., Path]) -> None:
    """A multilingual model (base) on batched German speech: the language is detected, reported once,
    and every window is transcribed in it."""
    model = replicas.load_model(models_dir / "base", "cpu", "int8", 2, 1)
    german = speech(
        "Der Zug nach Berlin fährt heute eine Stunde später ab. Die Kinder spielen im Garten hinter dem Haus. "
        "Am Abend regnet es in der ganzen Stadt.",
        voice="de",
        repeat=3,
    )
    infos: list[tuple[str, float]] = []
    segs: list[transcriber.Segment] = []
    result = transcriber.transcribe(
        model,
        german,
        jobs.Options(temperature=0.0),
        batch_size=4,
        window_s=12,
        on_info=lambda lang, p: infos.append((lang, p)),
        on_segment=segs.append,
    )
    assert result.language == "de" and [lang for lang, _ in infos] == ["de"]
    assert result.windows >= 2 and segs[-1].start > 12
    assert "berlin" in " ".join(words(segs))
