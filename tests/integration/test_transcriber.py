"""The windowed transcriber with the real tiny.en model."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from asr_daemon import errors, jobs
from asr_daemon.engine import audio, replicas, transcriber
from tests.conftest import STORY

TEXT = "Every window of a long recording is transcribed in turn, and no sentence is lost at the seams. "


@pytest.fixture(scope="module")
def model(models_dir: Path) -> object:
    """tiny.en on the CPU."""
    return replicas.load_model(models_dir / "tiny.en", "cpu", "int8", 2, 1)


@pytest.fixture(scope="module")
def minute(speech: Callable[..., Path]) -> Path:
    """About a minute of speech."""
    return speech(TEXT, repeat=10)


def run(model: object, path: Path, **kw: object) -> list[transcriber.Segment]:
    """Transcribe and collect the segments."""
    out: list[transcriber.Segment] = []
    # temperature 0 only: no random fallback sampling, so the runs are deterministic
    transcriber.transcribe(model, path, jobs.Options(language="en", temperature=0.0), on_segment=out.append, **kw)  # type: ignore[arg-type]
    return out


def test_windows_cover_the_file_in_order_without_repeats(model: object, minute: Path) -> None:
    """Transcribing in 30 s windows gives ordered, non-overlapping segments covering the whole file."""
    segs = run(model, minute, window_s=30)
    assert [s.seq for s in segs] == list(range(len(segs)))
    for a, b in itertools.pairwise(segs):
        assert a.end <= b.start + 0.01
    assert segs[-1].end > audio.probe(minute).duration - 3
    whole = run(model, minute, window_s=600)
    words = len(" ".join(s.text for s in segs).split())
    # repeated sentences may be heard a little differently in a shorter window; a seam loses none
    assert words >= 0.9 * len(" ".join(s.text for s in whole).split())


def test_resume_continues_after_the_given_point(model: object, minute: Path) -> None:
    """A resumed run starts at `resume_from` and numbers its segments from `first_seq`."""
    segs = run(model, minute, window_s=30, resume_from=40.0, first_seq=7)
    assert segs[0].seq == 7 and segs[0].start >= 40.0 and segs[-1].end > audio.probe(minute).duration - 3


@pytest.fixture(scope="module")
def story(speech: Callable[..., Path]) -> Path:
    """About 70 s of distinct sentences (each 2 to 6 s long)."""
    return speech(" ".join(STORY))


def test_later_windows_keep_sentence_timestamps_and_every_word(model: object, story: Path) -> None:
    """Windows after the first are cut into sentence-long segments (not one per 30 s chunk) and lose
    no words against a run in one window: the prompt that carries a window on keeps its timestamps."""
    segs = run(model, story, window_s=30)
    whole = run(model, story, window_s=600)
    assert max(s.end - s.start for s in segs) < 10, [(s.start, s.end) for s in segs]
    assert len(segs) >= 0.9 * len(whole)
    assert len(" ".join(s.text for s in segs).split()) >= 0.95 * len(" ".join(s.text for s in whole).split())


def test_a_resumed_run_keeps_sentence_timestamps(model: object, story: Path) -> None:
    """A run resumed with the tokens of the segments before it still gives sentence-long segments."""
    first = [s for s in run(model, story, window_s=600) if s.end < 30]
    tokens = [t for s in first for t in s.tokens]
    segs = run(model, story, window_s=600, resume_from=first[-1].end, first_seq=len(first), prompt_tokens=tokens)
    assert segs[0].seq == len(first) and len(segs) > 5
    assert max(s.end - s.start for s in segs) < 10, [(s.start, s.end) for s in segs]


def test_stop_interrupts_between_segments(model: object, minute: Path) -> None:
    """should_stop raises Stopped at the next segment."""
    seen: list[transcriber.Segment] = []
    with pytest.raises(transcriber.Stopped):
        transcriber.transcribe(
            model, minute, jobs.Options(), on_segment=seen.append, should_stop=lambda: len(seen) >= 2
        )
    assert len(seen) == 2


@pytest.mark.slow
def test_batched_pipeline_handles_long_windows(model: object, minute: Path) -> None:
    """With a batch size, windows over a minute go through the batched pipeline (which needs VAD)."""
    segs = run(model, minute, batch_size=4, window_s=600)
    assert segs and segs[-1].end > audio.probe(minute).duration - 3


def test_audio_longer_than_its_file_declared_fails_the_job(model: object, minute: Path) -> None:
    """Decoding past `max_audio_s` (the duration the probe measured, plus slack) fails the job before
    more is transcribed; within the bound the whole file is transcribed."""
    with pytest.raises(errors.JobFailed, match="decodes to more than 20 s"):
        run(model, minute, max_audio_s=20, window_s=10)
    assert run(model, minute, max_audio_s=120, window_s=30)[-1].end > 40


def test_the_prompt_history_drops_what_came_before_a_hot_segment() -> None:
    """Tokens accumulate up to Whisper's 223; a segment decoded above 0.5 (fallback) empties the history."""
    history = transcriber._carry([], list(range(200)), 0.0)
    history = transcriber._carry(history, list(range(200, 250)), 0.2)
    assert history == list(range(27, 250))
    assert transcriber._carry(history, [1, 2], 0.8) == []
    assert transcriber._carry([], [7, 8], 0.4) == [7, 8]


def test_a_resume_that_loops_on_its_prompt_is_decoded_again_without_it(
    model: object, speech: Callable[..., Path]
) -> None:
    """A job resumed mid-word whose prompt made Whisper loop gets that window's real words instead."""
    sentence = STORY[5]  # two segments; resumed at 3.1 s tiny.en repeated "opened my time" 59 times
    path = speech(sentence, voice="en")
    whole = run(model, path)
    assert len(whole) >= 2
    prompt = list(whole[0].tokens)
    resumed = run(model, path, resume_from=3.1, first_seq=1, prompt_tokens=prompt)
    said = len(sentence.split())
    got = len(whole[0].text.split()) + sum(len(s.text.split()) for s in resumed)
    assert 0.6 * said <= got <= 1.3 * said, [s.text for s in resumed]
    assert [s.seq for s in resumed] == list(range(1, 1 + len(resumed)))
    assert all(3.1 <= s.start < s.end <= audio.probe(path).duration + 0.5 for s in resumed)
