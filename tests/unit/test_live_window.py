"""Partial decodes over a short window (issue 21): the guards against loops and hallucinated text, the
window's length, the partial cadence, and one real decode of a growing utterance with tiny.en."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asr_daemon.live import window
from asr_daemon.live.agreement import Agreement
from asr_daemon.live.decoding import PARTIAL_SHARE, partial_due

TB = 50363  # tiny.en's first timestamp token (<|0.00|>); any value works for the cut


def ts(seconds: float) -> int:
    """The timestamp token of `seconds` (20 ms steps)."""
    return TB + round(seconds / 0.02)


def test_repeated_sentence_is_cut_at_its_first_repetition() -> None:
    """A sentence looped back to back (as a short window made Whisper do) keeps only its first copy."""
    loop = "Turn on the light. " * 5
    assert window.cut_repeats(loop) == "Turn on the light."
    assert window.cut_repeats("And so, my fellow, and so my fellow Americans") == "And so, my fellow,"
    assert window.cut_repeats("no no no no") == "no"


def test_natural_text_is_not_cut() -> None:
    """A word said twice, or a phrase that comes back later but not back to back, is speech: kept whole."""
    jfk = "ask not what your country can do for you, ask what you can do for your country"
    for text in ("It is very very cold", jfk, "that that is, is", ""):
        assert window.cut_repeats(text) == text


def test_text_whose_timestamps_fall_past_the_audio_is_dropped() -> None:
    """Segments starting past the audio's end (+ slack) go, with all after them; timestamps never reach the text."""
    tokens = [ts(0.0), 1, 2, ts(1.2), ts(1.2), 3, 4, ts(2.4), ts(2.4), 5, ts(6.0)]
    assert window.cut_past_end(tokens, TB, audio_s=1.8) == [1, 2, 3, 4]  # the one from 2.4 s starts past 1.8 + 0.5
    assert window.cut_past_end(tokens, TB, audio_s=1.0) == [1, 2, 3, 4]  # 1.2 is within the slack
    assert window.cut_past_end(tokens, TB, audio_s=0.5) == [1, 2]
    assert window.cut_past_end(tokens, TB, audio_s=10.0) == [1, 2, 3, 4, 5]
    assert window.cut_past_end([ts(0.0), 1, 2, ts(7.0)], TB, audio_s=0.5) == [1, 2]  # a far end is not judged
    assert window.cut_past_end([1, 2, ts(5.0), 3], TB, audio_s=2.0) == [1, 2]  # no timestamp first: from 0
    assert window.cut_past_end([ts(4.0), 1, 2, ts(5.0)], TB, audio_s=2.0) == []  # starts past the end


def test_window_covers_the_audio_in_steps_within_whispers_30_s() -> None:
    """At least WINDOW_MIN_S, the audio plus a margin rounded up to WINDOW_STEP_S, never past 3000 frames."""
    rate = window.RATE
    assert window.window_frames(rate // 2) == int(window.WINDOW_MIN_S * 100)
    assert window.window_frames(int(12.5 * rate)) == 1500
    assert window.window_frames(int(14.5 * rate)) == 2000  # 15.5 s of audio + margin → 20 s
    assert window.window_frames(40 * rate) == 3000


@pytest.fixture(scope="module")
def model(models_dir: Path) -> Any:
    """tiny.en on one CPU thread, as faster-whisper loads it."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(models_dir / "tiny.en"), device="cpu", compute_type="int8", cpu_threads=1)


def spoken(speech: Callable[..., Path], text: str) -> np.ndarray:
    """`text` spoken by espeak-ng, as 16 kHz float32 samples."""
    from faster_whisper.audio import decode_audio

    return decode_audio(str(speech(text)))


#: Two sentences: a stable text that ends the first one must not end the decode.
FIRST = "A journey of a thousand miles begins with a single step."
TWO = f"{FIRST} The early bird catches the worm before breakfast."


def test_partial_cadence_follows_the_cost_of_a_decode() -> None:
    """The next partial waits for `interval` of new audio, or a decode's cost (twice once text is stable) if more."""
    assert not partial_due(0.1, interval=0.2, cost=0.0, stable=False)
    assert partial_due(0.2, interval=0.2, cost=0.0, stable=True)
    assert partial_due(0.3, interval=0.2, cost=0.3, stable=False)  # no stable text yet: back to back
    assert not partial_due(0.5, interval=0.2, cost=0.3, stable=True)  # then at most half the wall time
    assert partial_due(PARTIAL_SHARE * 0.3, interval=0.2, cost=0.3, stable=True)
    assert not partial_due(0.5, interval=0.2, cost=1.0, stable=False)  # dear decodes come rarely


@pytest.mark.slow
def test_short_window_partials_agree_on_a_prefix_of_the_sentence(model: Any, speech: Callable[..., Path]) -> None:
    """Real tiny.en decodes of a growing espeak sentence: the stable words are the sentence's own start."""
    sentence = "The committee met on Tuesday morning to review the budget for the coming year."
    audio = spoken(speech, sentence)
    agreement = Agreement()
    for end in np.arange(1.0, len(audio) / window.RATE + 0.5, 0.5):
        text, language = window.decode_partial(
            model, audio[: int(end * window.RATE)], language=None, prompt=None, prefix=agreement.text
        )
        assert language is None  # an English-only model detects nothing
        if text is not None:
            agreement.update(text)
    said = sentence.lower().rstrip(".").split()
    stable = [w.strip(".,").lower() for w in agreement.text.split()]
    assert len(stable) >= 5 and stable == said[: len(stable)]


@pytest.mark.slow
def test_a_final_decode_forced_to_a_whole_sentence_keeps_what_was_said_next(
    model: Any, speech: Callable[..., Path]
) -> None:
    """A final decode prefixed with a finished sentence still transcribes the utterance's next sentence."""
    from asr_daemon.engine import transcriber

    audio = spoken(speech, TWO)
    text, segments, _ = transcriber.decode_utterance(model, audio, offset=5.0, prefix=FIRST, first_seq=3)
    assert text.startswith(FIRST)
    assert "breakfast" in text.lower()  # without the second decode Whisper stopped after "single step."
    assert [s.seq for s in segments] == list(range(3, 3 + len(segments)))
    assert all(5.0 <= s.start < s.end <= 5.0 + len(audio) / 16000 + 0.5 for s in segments)
    assert segments[-1].start >= segments[0].end - 0.01  # the rest's times follow the prefixed part's


@pytest.mark.slow
def test_a_partial_forced_to_a_whole_sentence_goes_on_with_the_next(model: Any, speech: Callable[..., Path]) -> None:
    """Partials prefixed with a finished sentence still bring the next sentence's words (deltas go on)."""
    audio = spoken(speech, TWO)
    text, _ = window.decode_partial(model, audio, language=None, prompt=None, prefix=FIRST)
    assert text is not None and text.startswith(FIRST)
    assert "worm" in text.lower()  # without the rest's own decode the partial stopped at "single step."


@pytest.mark.slow
def test_an_unsure_partial_does_not_vote(model: Any, speech: Callable[..., Path]) -> None:
    """A partial of a third of a second of a word (Whisper guesses "Thank you." there) comes back None."""
    audio = spoken(speech, "The committee met on Tuesday morning to review the budget.")
    sure, _ = window.decode_partial(model, audio, language=None, prompt=None, prefix="")
    assert sure is not None and "budget" in sure.lower()
    noise = np.random.default_rng(7).normal(0, 0.05, window.RATE // 3).astype(np.float32)
    unsure, _ = window.decode_partial(model, noise, language=None, prompt=None, prefix="")
    assert unsure is None
