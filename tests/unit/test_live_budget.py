"""The token budget of live decodes (engine/budget.py): no session prompt, stable prefix or utterance length
makes a decode ask faster-whisper for more than Whisper's 448-token context (it refused such a decode with a
ValueError, and the utterance's text was lost); real tiny.en decodes at the worst case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asr_daemon.engine import budget, transcriber
from asr_daemon.live import window
from tests.conftest import STORY

#: A session prompt far past the 223 tokens faster-whisper keeps (the protocol allows 2000 characters).
GLOSSARY = ("Glossary: " + ", ".join(f"Name{i} Surname{i}" for i in range(120)))[:1900]
#: faster-whisper's largest prompt besides the session prompt: 3 start tokens, <|notimestamps|>, <|0.00|>,
#: a prefix cut to 223 tokens.
WORST_FIXED = 3 + 1 + 1 + budget.KEEP


def test_prompt_and_new_tokens_never_exceed_the_context() -> None:
    """For every prompt size, prefix size and utterance length the budget fits in 448 tokens and leaves new tokens."""
    for previous in (0, 1, 50, 150, 222, 223, 224, 400, 2000):
        for fixed in (1, 2, 3, 4, 5, 60, 120, 200, WORST_FIXED):
            for audio_s in (0.0, 0.1, 1.0, 5.0, 17.8, 28.0, 30.0, 35.7, 120.0):
                keep, new = budget.plan(previous, fixed, audio_s)
                assert 0 <= keep <= min(previous, budget.KEEP)
                assert fixed + (keep + 1 if keep else 0) + new <= budget.MAX_LENGTH, (previous, fixed, audio_s)
                assert new >= min(budget.wanted(audio_s), budget.MIN_NEW), (previous, fixed, audio_s)


def test_the_new_token_cap_is_per_30_s_window() -> None:
    """A manual commit longer than Whisper's window gets one window's cap (faster-whisper applies it per window)."""
    assert budget.wanted(35.7) == budget.wanted(30.0) == 12 * 30 + 24
    assert budget.wanted(2.0) == 12 * 2 + 24  # a short utterance keeps its tight loop guard
    assert budget.plan(0, 1, 35.7) == (0, 384)


def test_the_session_prompt_is_kept_unless_it_would_starve_the_decode() -> None:
    """A full session prompt stays whole beside a short prefix (new tokens shrink as in a file job); only with a
    long prefix too is it shortened, from its start, to leave MIN_NEW tokens."""
    keep, new = budget.plan(500, 2, 17.8)  # <|startoftranscript|> <|0.00|>: nothing stable yet
    assert keep == budget.KEEP and new == budget.MAX_LENGTH - 2 - budget.KEEP - 1
    keep, new = budget.plan(500, WORST_FIXED, 28.0)
    assert 0 < keep < budget.KEEP and new == budget.MIN_NEW
    assert budget.plan(0, WORST_FIXED, 28.0)[1] == budget.MAX_LENGTH - WORST_FIXED


@pytest.fixture(scope="module")
def model(models_dir: Path) -> Any:
    """tiny.en on one CPU thread, as faster-whisper loads it."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(models_dir / "tiny.en"), device="cpu", compute_type="int8", cpu_threads=1)


def test_fit_counts_the_prompt_as_faster_whisper_builds_it(model: Any) -> None:
    """The session prompt's tokens and the room left agree with faster-whisper's own `get_prompt` (tiny.en)."""
    prefix = " ".join(STORY) * 2  # past the 223 tokens faster-whisper keeps of a prefix
    previous, new = budget.fit(model, None, GLOSSARY, prefix, without_timestamps=False, audio_s=28.0)
    tok = budget.tokenizer(model, None)
    assert previous == tok.encode(" " + GLOSSARY.strip())[-len(previous) :]
    full = model.get_prompt(tok, previous, without_timestamps=False, prefix=prefix)
    assert len(full) + new <= budget.MAX_LENGTH and new >= budget.MIN_NEW
    assert budget.fit(model, None, None, None, without_timestamps=True, audio_s=1.0) == ([], 12 + 24)


def test_a_long_utterance_with_a_long_prompt_and_prefix_is_decoded(model: Any, speech: Callable[..., Path]) -> None:
    """35.7 s of speech, a 1900-character prompt and the utterance's stable text as prefix: the final and the
    partial decode return text (before, the final one raised ValueError: prompt + max_new_tokens > 448)."""
    from faster_whisper.audio import decode_audio

    text = " ".join(STORY[:6])
    audio: np.ndarray = decode_audio(str(speech(text)))
    assert len(audio) / 16000 > 30
    prefix = " ".join(STORY[:4])  # what partials made stable (about 90 tokens)
    out, segments, _ = transcriber.decode_utterance(model, audio, prompt=GLOSSARY, prefix=prefix, final=True)
    assert out.startswith(prefix) and "thursday" in out.lower()  # the second 30 s window is transcribed too
    assert segments
    worst = " ".join(STORY) * 2  # a prefix past the 223 tokens faster-whisper keeps of one
    partial, _ = window.decode_partial(model, audio[: 20 * 16000], language=None, prompt=GLOSSARY, prefix=worst)
    assert partial is None or partial.startswith(STORY[0][:20])
