"""The only caller of faster-whisper: load a model, and transcribe a file window by window.

Everything here blocks; the worker runs it in a thread (CTranslate2 releases the GIL). Audio
longer than one window is decoded and transcribed a window at a time, so memory stays bounded;
the same mechanism resumes an interrupted job from the end of its last stored segment.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr_daemon import jobs
from asr_daemon.engine import audio, batched, budget, device
from asr_daemon.engine.replicas import lease

log = logging.getLogger(__name__)

#: A window's last segments that end within this many seconds of the window's end are dropped
#: and transcribed again at the start of the next window (they may be cut mid-word).
TAIL_MARGIN = 5.0
#: Tokens of earlier segments given as the prompt when a window or a resumed job starts: all that
#: Whisper reads (half its 448-token context, less the start-of-previous token).
PROMPT_TOKENS = 223
#: A segment decoded hotter than this (temperature fallback: the likely garbled ones) ends the prompt
#: history: faster-whisper's own `prompt_reset_on_temperature` between its 30 s chunks.
PROMPT_RESET_TEMPERATURE = 0.5
#: Seconds of audio between two heap trims inside a window (about one 30 s chunk): CTranslate2's
#: freed buffers otherwise pile up in each of its threads' malloc arenas and raise the peak.
TRIM_EVERY_S = 30.0
#: A segment whose text compresses better than this is a loop (faster-whisper's own
#: `compression_ratio_threshold`). With a prompt, the window is decoded again from there without it.
LOOP_RATIO = 2.4


class Stopped(Exception):  # a signal, not an error
    """Raised out of `transcribe` when `should_stop` said so (cancel or drain)."""


@dataclass
class Segment:
    """One transcribed segment, with absolute times in the file."""

    seq: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    tokens: list[int]
    words: list[dict[str, Any]] | None

    @classmethod
    def of(cls, seg: Any, seq: int, offset: float, ndigits: int | None = None) -> Segment:
        """A faster-whisper segment as number `seq`, its times (and its words') `offset` seconds on."""
        words = None
        if seg.words is not None:
            words = [
                {
                    "start": round(w.start + offset, 3),
                    "end": round(w.end + offset, 3),
                    "word": w.word,
                    "probability": w.probability,
                }
                for w in seg.words
            ]
        return cls(
            seq=seq,
            start=round(seg.start + offset, ndigits) if ndigits is not None else seg.start + offset,
            end=round(seg.end + offset, ndigits) if ndigits is not None else seg.end + offset,
            text=seg.text,
            avg_logprob=seg.avg_logprob,
            no_speech_prob=seg.no_speech_prob,
            compression_ratio=seg.compression_ratio,
            temperature=seg.temperature or 0.0,
            tokens=list(seg.tokens),
            words=words,
        )


@dataclass
class Result:
    """What a whole run produced besides its segments."""

    language: str | None = None
    language_probability: float | None = None
    segments: int = 0
    windows: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def _windows(
    path: Path, skip_s: float, window_s: float, max_s: float | None = None
) -> Generator[tuple[np.ndarray, bool], int, None]:
    """Yield (samples, is_last) windows of about `window_s` seconds, after skipping `skip_s`.

    The caller tells how much of each window it consumed by `send`ing the number of samples; the
    rest is carried into the next window. Each window is joined from its chunks once (growing one
    buffer chunk by chunk would copy it over and over and fragment the heap). Audio that decodes to
    more than `max_s` seconds raises `JobFailed`: its container lied about its length at intake.
    """
    want = int(window_s * audio.SAMPLE_RATE)
    skip = int(skip_s * audio.SAMPLE_RATE)
    carry = np.zeros(0, dtype=np.float32)
    chunks = audio.stream(path, max_s)
    done = False
    while True:
        parts, have = [carry], len(carry)
        while not done and have < want + 1:
            try:
                chunk = next(chunks)
            except StopIteration:
                done = True
                break
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            parts.append(chunk)
            have += len(chunk)
        buf = np.concatenate(parts)
        del parts
        last = done and len(buf) <= want
        window = buf if last else buf[:want]
        if len(window) == 0:
            return
        consumed = yield window, last
        if last:
            return
        carry = buf[int(consumed or len(window)) :].copy()  # a copy, so the window's buffer can be freed
        del buf, window


def _carry(history: list[int], tokens: Sequence[int], temperature: float) -> list[int]:
    """The prompt history after one more segment: its tokens appended (the last `PROMPT_TOKENS`
    kept), or nothing after a segment decoded hotter than `PROMPT_RESET_TEMPERATURE`, as
    faster-whisper resets its own prompt after such a chunk."""
    if temperature > PROMPT_RESET_TEMPERATURE:
        return []
    return [*history, *tokens][-PROMPT_TOKENS:]


def _continuation(model: Any, tokens: Sequence[int], fallback: str | None) -> list[int] | str | None:
    """The prompt that carries a window on from the text before it: the last tokens, timestamps included.

    Plain text will not do: Whisper prompted with text that has no timestamp tokens answers in
    kind, one segment for a whole 30 s chunk, and each chunk after it inherits that. Tokens
    without any timestamp (the batched pipeline's) are no prompt at all, for the same reason.
    `fallback` (the caller's own prompt) stands in while nothing has been transcribed yet.
    """
    if not tokens:
        return fallback
    timestamp_begin = model.hf_tokenizer.token_to_id("<|notimestamps|>") + 1  # as faster-whisper counts
    tail = list(tokens[-PROMPT_TOKENS:])
    return tail if any(t >= timestamp_begin for t in tail) else None


def _kwargs(
    options: jobs.Options, beam_size: int, language: str | None, prompt: list[int] | str | None
) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "task": options.task.value,
        "language": language,
        "beam_size": options.beam_size or beam_size,
        "initial_prompt": prompt,
        "word_timestamps": options.word_timestamps,
        "vad_filter": options.vad_filter,
    }
    if options.vad is not None and options.vad_filter:
        kw["vad_parameters"] = options.vad.faster_whisper()
    if options.temperature is not None:
        kw["temperature"] = options.temperature
    return kw


def _unlooped(model: Any, window: np.ndarray, segments: Iterable[Any], kw: dict[str, Any]) -> Iterator[Any]:
    """`segments` of `window`, but from a loop decoded with a prompt on, the window decoded again from
    the loop's start without the prompt (times shifted back into the window).

    Whisper given the text before as its prompt may repeat that text over and over instead of
    transcribing (a job resumed after a kill -9 at 3.1 s of a 6 s sentence: "The library opened my time
    and opened my time and…", 179 words for 17). Temperature fallback would catch it, but not for a
    job that asked for temperature 0 alone, nor once every temperature failed.
    """
    for seg in segments:
        if kw["initial_prompt"] is None or seg.compression_ratio <= LOOP_RATIO:
            yield seg
            continue
        at = seg.start
        log.info("prompt_loop_decoded_again", extra={"at_s": round(at, 2), "ratio": round(seg.compression_ratio, 1)})
        again, _ = model.transcribe(window[int(at * audio.SAMPLE_RATE) :], **{**kw, "initial_prompt": None})
        for fresh in again:
            yield dataclasses.replace(
                fresh, start=fresh.start + at, end=fresh.end + at,
                words=[dataclasses.replace(w, start=w.start + at, end=w.end + at) for w in fresh.words]
                if fresh.words else fresh.words,
            )  # fmt: skip
        return


def batch_for(options: jobs.Options, default: int, min_s: float, duration_s: float | None) -> int:
    """The batch size for one job: the request's own (0: sequential), else `default` for audio of at
    least `min_s` seconds. A prompt needs the sequential path (it conditions each 30 s on the last)."""
    if options.prompt:
        return 0
    if options.batch_size is not None:
        return options.batch_size
    return default if duration_s is not None and duration_s >= min_s else 0


def transcribe(
    model: Any,
    path: Path,
    options: jobs.Options,
    *,
    beam_size: int = 5,
    window_s: float = 600.0,
    batch_size: int = 0,
    resume_from: float = 0.0,
    first_seq: int = 0,
    max_audio_s: float | None = None,
    language: str | None = None,
    prompt_tokens: Sequence[int] = (),
    on_info: Callable[[str, float], None] = lambda lang, prob: None,
    on_segment: Callable[[Segment], None] = lambda seg: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Result:
    """Transcribe `path` from `resume_from` seconds on, calling `on_segment` for each segment.

    For audio shorter than one window and `batch_size` 0 this is exactly
    `model.transcribe(decode_audio(path), ...)`; with a `batch_size` each window is transcribed by
    `batched.transcribe` (VAD chunks decoded that many at a time).
    `language` (when known from an earlier run) and `prompt_tokens` (the tokens of the segments
    before `resume_from`) keep a resumed or windowed run consistent with an uninterrupted one.
    """
    result = Result()
    seq = first_seq
    offset = resume_from
    lang = language or options.language
    history = list(prompt_tokens[-PROMPT_TOKENS:])
    prompt = _continuation(model, history, options.prompt)
    t0 = time.perf_counter()
    gen = _windows(path, resume_from, window_s, max_audio_s)
    try:
        window, last = next(gen)
    except StopIteration:
        return result
    while True:
        result.windows += 1
        with lease(model) as chosen:  # a copy of `Replicas` held while this window's segments come
            kw = _kwargs(options, beam_size, lang, prompt)
            if batch_size:
                segments, info = batched.transcribe(chosen, window, batch_size, **kw)
            else:
                segments, info = chosen.transcribe(window, **kw)
                segments = _unlooped(chosen, window, segments, kw)
            if result.language is None:
                result.language, result.language_probability = info.language, info.language_probability
                lang = lang or info.language
                on_info(info.language, info.language_probability)
            cut = len(window) / audio.SAMPLE_RATE
            trim_at = TRIM_EVERY_S
            for seg in segments:
                if should_stop():
                    raise Stopped
                if seg.start >= trim_at:  # the first segment of a later chunk
                    device.trim_heap()
                    trim_at = seg.start + TRIM_EVERY_S
                if not last and seg.end > cut - TAIL_MARGIN and seg.start > 1.0:
                    cut = seg.start
                    break
                result.timings.setdefault("first_segment_s", time.perf_counter() - t0)
                on_segment(Segment.of(seg, seq, offset))
                history = _carry(history, seg.tokens, seg.temperature or 0.0)
                seq += 1
        result.segments = seq - first_seq
        if last:
            break
        if should_stop():
            raise Stopped
        prompt = _continuation(model, history, options.prompt)
        offset += cut
        consumed = int(cut * audio.SAMPLE_RATE)
        del window, segments  # the finished window's audio, and the features its suspended generator holds
        device.trim_heap()  # hand the freed buffers back to the OS: keeps long-file RSS flat
        window, last = gen.send(consumed)
    result.timings["transcribe_s"] = time.perf_counter() - t0
    return result


#: Live decoding: the final decode's fallback temperatures (fewer than faster-whisper's six: each is a
#: whole beam search, and a live client waits for it). Its new-token cap: engine/budget.py.
LIVE_TEMPERATURES = (0.0, 0.3, 0.6)
#: A final live decode forced to start with the stable text that leaves this much of the utterance after
#: its last segment decodes that rest again, without the prefix (speech only, by Silero).
LIVE_REST_S = 1.0


def decode_utterance(
    model: Any,
    samples: np.ndarray,
    *,
    offset: float = 0.0,
    language: str | None = None,
    prompt: str | None = None,
    beam_size: int = 1,
    final: bool = True,
    first_seq: int = 0,
    prefix: str | None = None,
) -> tuple[str, list[Segment], str | None]:
    """One live utterance (16 kHz float32, at most a few tens of seconds): (text, segments, language).

    `prefix` (the text already sent as stable) is forced as the start of the decode, so what the
    client was told never changes. A partial decode (`final=False`) is greedy, without timestamps
    or temperature fallback: it only feeds the stable-prefix policy. The final one keeps segments
    with times `offset` seconds on.
    """
    # speech is at most ~5 tokens a second: a cap far above it ends a hallucinated loop (seen on a 2 s cut of
    # base: 448 tokens at every fallback temperature, 23 s) without touching real text; it leaves room for
    # the prompt (a session prompt and a long stable prefix once made faster-whisper refuse the decode)
    previous, new_tokens = budget.fit(
        model, language, prompt, prefix, without_timestamps=not final, audio_s=len(samples) / audio.SAMPLE_RATE
    )
    kw: dict[str, Any] = {
        "language": language,
        "initial_prompt": previous or None,
        "prefix": prefix or None,
        "beam_size": beam_size,
        "condition_on_previous_text": False,
        "vad_filter": False,
        "max_new_tokens": new_tokens,
        "temperature": LIVE_TEMPERATURES,
    }
    if not final:
        kw.update(beam_size=1, without_timestamps=True, temperature=0.0)
    pieces, info = model.transcribe(samples, **kw)
    segments = [Segment.of(seg, first_seq + i, offset, ndigits=3) for i, seg in enumerate(pieces)]
    covered = segments[-1].end - offset if segments else 0.0
    if final and prefix and len(samples) / audio.SAMPLE_RATE - covered >= LIVE_REST_S:
        # Forced to start with a whole sentence, Whisper may close the window after it ("single step."
        # then a lone timestamp: faster-whisper takes the window as done) and drop what was said next.
        kw.update(prefix=None, vad_filter=True, language=kw["language"] or info.language)
        rest, _ = model.transcribe(samples[int(covered * audio.SAMPLE_RATE) :], **kw)
        n = len(segments)
        segments += [Segment.of(seg, first_seq + n + i, offset + covered, ndigits=3) for i, seg in enumerate(rest)]
    _clamp(segments, round(offset + len(samples) / audio.SAMPLE_RATE, 3))
    text = "".join(s.text for s in segments).strip()
    return text, segments, info.language


def _clamp(segments: list[Segment], end: float) -> None:
    """No segment (nor word) of an utterance ends after its audio: Whisper's last timestamp may lie past it
    (0.00-3.00 for 2.78 s), and the next utterance's segments would overlap it."""
    for seg in segments:
        seg.end, seg.start = min(seg.end, end), min(seg.start, end)
        for w in seg.words or ():
            w["end"], w["start"] = min(w["end"], end), min(w["start"], end)
