"""The token budget of one live decode: what its prompt leaves of Whisper's 448-token context.

faster-whisper refuses a decode (ValueError) whose prompt plus `max_new_tokens` exceeds the model's
`max_length`, 448 tokens. A live decode's prompt (faster-whisper's `get_prompt`) is, in order:
<|startofprev|> and the session prompt's last tokens (faster-whisper keeps at most 223), the start
tokens (1 for an English-only model, 3 for a multilingual one), <|notimestamps|> for a decode
without timestamps, and the forced prefix (the stable text already sent: <|0.00|> then its first
223 tokens at most). Together that can reach 451 tokens: more than the whole context.

The new-token cap is a loop guard: TOKENS_PER_S of one 30 s window (faster-whisper applies the cap
to each window it decodes, and it reads 30 s at a time) plus SPARE, at most 384 — speech is about
5 tokens a second. It is cut to what the prompt leaves (a file job's 30 s window, 223 prompt tokens
after it, gets 221 new tokens too). Only when the prompt would leave fewer than MIN_NEW new tokens
is the session prompt shortened (its first tokens dropped, as faster-whisper drops them): the forced
prefix is text the client was already sent as final, so it stays whole.
"""

from __future__ import annotations

from typing import Any

from faster_whisper.tokenizer import Tokenizer

#: Whisper's context: the prompt and the tokens it generates together (faster-whisper's `max_length`).
MAX_LENGTH = 448
#: The most tokens faster-whisper keeps of a prompt, and of a prefix (half the context less one).
KEEP = MAX_LENGTH // 2 - 1
#: New tokens allowed per second of audio, plus SPARE (timestamps, a short utterance's few words).
TOKENS_PER_S = 12
SPARE = 24
#: Seconds of audio one decode window holds (the cap applies per window).
WINDOW_S = 30.0
#: New tokens a decode keeps however long its prompt: the session prompt is shortened to leave them.
MIN_NEW = 128


def wanted(audio_s: float) -> int:
    """New tokens a decode of `audio_s` seconds may want, per 30 s window."""
    return int(TOKENS_PER_S * min(max(audio_s, 0.0), WINDOW_S)) + SPARE


def plan(previous: int, fixed: int, audio_s: float) -> tuple[int, int]:
    """(how many of the session prompt's `previous` tokens to keep — its last ones —, max_new_tokens) for a
    decode whose prompt holds `fixed` tokens besides them (start tokens, <|notimestamps|>, the prefix).

    The kept prompt, its <|startofprev|>, `fixed` and the new tokens never exceed MAX_LENGTH; the new
    tokens are at least min(wanted, MIN_NEW) for any `fixed` up to faster-whisper's own bound (228).
    """
    want = wanted(audio_s)
    keep = min(previous, KEEP)
    room = MAX_LENGTH - fixed - min(want, MIN_NEW)  # for <|startofprev|> and the prompt kept
    if keep and keep + 1 > room:
        keep = max(0, room - 1)
    used = fixed + (keep + 1 if keep else 0)
    return keep, min(want, MAX_LENGTH - used)


def tokenizer(model: Any, language: str | None) -> Tokenizer:
    """`model`'s tokenizer for transcribing `language` (English for an English-only model)."""
    multilingual = bool(model.model.is_multilingual)
    return Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=language if multilingual else "en")


def fit(
    model: Any, language: str | None, prompt: str | None, prefix: str | None, *, without_timestamps: bool,
    audio_s: float,
) -> tuple[list[int], int]:  # fmt: skip
    """(the session prompt's tokens to give faster-whisper as `initial_prompt`, `max_new_tokens`) for one
    decode of `audio_s` seconds by `model` (a faster_whisper.WhisperModel), counted as `get_prompt` builds
    it, so that no prompt, prefix or utterance length makes the decode exceed the context."""
    # a multilingual model's language is detected in the decode: any language's start tokens count the same
    tok = tokenizer(model, language or "en")
    previous = tok.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
    fixed = len(model.get_prompt(tok, [], without_timestamps=without_timestamps, prefix=prefix or None))
    keep, new = plan(len(previous), fixed, audio_s)
    return (previous[len(previous) - keep :] if keep else []), new
