"""Partial decodes over a short encoder window, with guards against what short windows invite.

faster-whisper pads every window to 30 s before Whisper's encoder reads it, which is most of a
short utterance's decode. A partial decode (its text only feeds the stable-prefix policy; the final
decode stays faster-whisper's whole one) encodes just the utterance plus a margin, rounded up to
WINDOW_STEP_S so that most of a growing utterance's decodes share a window length, at least
WINDOW_MIN_S: Whisper was trained on 30 s windows, and on a bare utterance-sized window it can loop
(one real sentence came back ten times over). Two guards cut what a loop or a hallucination adds,
before LocalAgreement (consecutive decodes must agree) sees the text:

- `cut_past_end`: the decode runs with timestamps; a segment that starts past the audio's end (plus
  TIMESTAMP_SLACK_S) is not speech of this audio and is dropped, with all that follows (segment ends
  are not judged: on a short window Whisper often puts them far out, even after the right words —
  "The engineer." from 0.5 s of audio ended at 7.0 s);
- `cut_repeats`: a run of words repeated back to back (two copies of two words or more, three of one
  word) is cut at its first repetition.

A partial is forced to start with the stable text; when that text ends a sentence Whisper often ends the
window there (a timestamp, then end of text) however much was said next, so the rest of the audio after
that timestamp is decoded on its own and appended (`REST_S`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asr_daemon.engine import budget
from asr_daemon.live.agreement import norm, words

RATE = 16000
#: The shortest encoder window of a partial decode, in seconds (Whisper's own is 30 s).
WINDOW_MIN_S = 10.0
#: Silence after the utterance in the window, then rounded up to a multiple of WINDOW_STEP_S.
WINDOW_MARGIN_S = 1.0
WINDOW_STEP_S = 5.0
#: A segment may start this far past the audio's end (a word cut off by the end of the audio).
TIMESTAMP_SLACK_S = 0.5
#: A multilingual model with no language given detects it on a partial's window from this much audio
#: on (a word or two is too little to tell a language by); shorter partials wait.
DETECT_MIN_S = 1.0
#: A partial forced to start with the stable text that stops this far before the audio's end decodes the
#: rest again without it (see `decode_partial`).
REST_S = 0.5
#: A partial whose mean token log-probability is below this does not vote (faster-whisper's
#: `log_prob_threshold`, where its own decode would retry at a higher temperature): on the first half
#: second of jfk.flac's "What your country" tiny.en said "Thank you." at -1.35, "like you." at -1.02.
MIN_LOGPROB = -1.0
_FRAMES_PER_S = 100
_MAX_FRAMES = 3000


def window_frames(n_samples: int) -> int:
    """How many mel frames the encoder reads for `n_samples` of audio (see the module's docstring)."""
    seconds = n_samples / RATE + WINDOW_MARGIN_S
    seconds = max(WINDOW_MIN_S, -(-seconds // WINDOW_STEP_S) * WINDOW_STEP_S)
    return min(_MAX_FRAMES, int(seconds * _FRAMES_PER_S))


def cut_past_end(tokens: list[int], timestamp_begin: int, audio_s: float) -> list[int]:
    """The text tokens of the segments that start by the audio's end (+ slack); timestamps removed.

    A segment starts at the last timestamp token before its text; the first that starts past the
    end drops itself and everything after it. Text before any timestamp counts as starting at 0.
    """
    limit = audio_s + TIMESTAMP_SLACK_S
    kept: list[int] = []
    start = 0.0
    for tok in tokens:
        if tok >= timestamp_begin:
            start = (tok - timestamp_begin) * 0.02
        elif start > limit:
            break
        else:
            kept.append(tok)
    return kept


def cut_repeats(text: str) -> str:
    """`text` up to the first back-to-back repetition (n ≥ 2 words twice, or one word three times)."""
    ws = words(text)
    keys = [norm(w) for w in ws]
    for i in range(len(keys)):
        for n in range(1, (len(keys) - i) // 2 + 1):
            copies = 3 if n == 1 else 2
            if i + copies * n > len(keys):
                break
            block = keys[i : i + n]
            if all(keys[i + k * n : i + (k + 1) * n] == block for k in range(1, copies)):
                return "".join(ws[: i + n]).strip()
    return text


def decode_partial(
    model: Any, samples: np.ndarray, *, language: str | None, prompt: str | None, prefix: str
) -> tuple[str | None, str | None]:
    """Greedy decode of `samples` (16 kHz float32) over a short window: (guarded text, language).

    `model` is a faster_whisper.WhisperModel. `prefix` (the stable text) is forced as the start;
    the text returned starts with it unless a guard cut into it. A multilingual model with no
    `language` detects it on this window, from DETECT_MIN_S of audio on ("" before). The text is
    None when the decode is unsure of its own words (below MIN_LOGPROB): it should not vote.
    """
    if language is None and model.model.is_multilingual and len(samples) < DETECT_MIN_S * RATE:
        return "", None
    feats = model.feature_extractor(samples)[:, :-1]
    frames = window_frames(len(samples))
    feats = feats[:, :frames]
    if feats.shape[1] < frames:
        feats = np.pad(feats, ((0, 0), (0, frames - feats.shape[1])))
    encoded = model.encode(np.ascontiguousarray(feats, dtype=np.float32))
    if language is None and model.model.is_multilingual:
        language = model.model.detect_language(encoded)[0][0][0][2:-2]
    tok = budget.tokenizer(model, language)
    audio_s = len(samples) / RATE
    previous, new_tokens = budget.fit(model, language, prompt, prefix, without_timestamps=False, audio_s=audio_s)
    prompt_ids = model.get_prompt(tok, previous, without_timestamps=False, prefix=prefix or None)
    result = model.model.generate(
        encoded, [prompt_ids], beam_size=1, max_length=len(prompt_ids) + new_tokens,
        suppress_blank=True, suppress_tokens=[-1], max_initial_timestamp_index=50, return_scores=True,
    )[0]  # fmt: skip
    if result.scores[0] < MIN_LOGPROB:
        return None, language
    ids = [t for t in result.sequences_ids[0] if t < tok.eot or t >= tok.timestamp_begin]
    text = cut_repeats(tok.decode(cut_past_end(ids, tok.timestamp_begin, audio_s)).strip())
    ended = (ids[-1] - tok.timestamp_begin) * 0.02 if ids and ids[-1] > tok.timestamp_begin else 0.0
    if prefix and ended and audio_s - ended >= REST_S and len(words(text)) <= len(words(prefix)):
        # Forced to start with a whole sentence, Whisper often closes the window after it ("…single
        # step." <|7.00|> end of text) however much was said next: decode that rest on its own, with
        # the text before it as context (as faster-whisper conditions a window on the previous one).
        context = f"{prompt or ''} {text}".strip()
        rest, _ = decode_partial(model, samples[int(ended * RATE) :], language=language, prompt=context, prefix="")
        text = f"{text} {rest or ''}".strip()
    return text, language
