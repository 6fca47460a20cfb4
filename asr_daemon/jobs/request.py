"""What a request may ask of a job: task, response format, the options that change a transcript, and
the parsing of the form fields into them.

Pure domain: imports nothing of the project outside `jobs`, does no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from asr_daemon.jobs.speakers import DiarizationOptions


class Task(enum.StrEnum):
    """What Whisper is asked to do."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class ResponseFormat(enum.StrEnum):
    """Renderings of a transcript (OpenAI's names)."""

    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VTT = "vtt"
    VERBOSE_JSON = "verbose_json"
    #: OpenAI's gpt-4o-transcribe-diarize shape (implies diarize=true; issue 19)
    DIARIZED_JSON = "diarized_json"
    #: the speaker turns as RTTM lines (implies diarize=true)
    RTTM = "rttm"


LANGUAGES = frozenset(
    [
        "af",
        "am",
        "ar",
        "as",
        "az",
        "ba",
        "be",
        "bg",
        "bn",
        "bo",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "gl",
        "gu",
        "ha",
        "haw",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jw",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "la",
        "lb",
        "ln",
        "lo",
        "lt",
        "lv",
        "mg",
        "mi",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "sn",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "tg",
        "th",
        "tk",
        "tl",
        "tr",
        "tt",
        "uk",
        "ur",
        "uz",
        "vi",
        "yi",
        "yo",
        "zh",
        "yue",
    ]
)

MAX_PROMPT_CHARS = 2000


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _real(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _whole(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class VadParameters:
    """OpenAI's `chunking_strategy` of type `server_vad`, as faster-whisper's Silero VAD reads it."""

    threshold: float | None = None
    silence_duration_ms: int | None = None
    prefix_padding_ms: int | None = None

    def to_json(self) -> dict[str, object]:
        """The parameters given (stored in `jobs.options`)."""
        return {k: v for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> VadParameters:
        """Inverse of `to_json`."""
        return cls(
            _real(data.get("threshold")), _whole(data.get("silence_duration_ms")), _whole(data.get("prefix_padding_ms"))
        )

    def faster_whisper(self) -> dict[str, float | int]:
        """`vad_parameters` for `WhisperModel.transcribe`."""
        names = {
            "threshold": "threshold",
            "silence_duration_ms": "min_silence_duration_ms",
            "prefix_padding_ms": "speech_pad_ms",
        }
        return {names[k]: v for k, v in self.to_json().items() if isinstance(v, int | float)}


@dataclass(frozen=True)
class Options:
    """Everything that changes a transcript. Two jobs with equal options and audio agree."""

    task: Task = Task.TRANSCRIBE
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    vad_filter: bool = False
    beam_size: int | None = None
    #: batch size asked for (0: sequential); None: the server's choice by the audio's length
    batch_size: int | None = None
    #: speaker diarization asked for (None: not asked); set by asr_daemon.diarization.request
    diarization: DiarizationOptions | None = None
    #: the VAD's settings from `chunking_strategy` (None: faster-whisper's defaults)
    vad: VadParameters | None = None

    def to_json(self) -> dict[str, object]:
        """Plain JSON-able form, stored in `jobs.options`."""
        out: dict[str, object] = {
            "task": str(self.task),
            "language": self.language,
            "prompt": self.prompt,
            "temperature": self.temperature,
            "word_timestamps": self.word_timestamps,
            "vad_filter": self.vad_filter,
            "beam_size": self.beam_size,
            "diarization": self.diarization.to_json() if self.diarization is not None else None,
        }
        if self.batch_size is not None:  # unset: absent, so earlier jobs' fingerprints still match
            out["batch_size"] = self.batch_size
        if self.vad is not None:  # the same
            out["vad"] = self.vad.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Options:
        """Inverse of `to_json`; missing keys take their defaults, unknown keys are ignored (older rows, newer code)."""
        task, spk, vad = data.get("task"), data.get("diarization"), data.get("vad")
        return cls(
            task=Task(task) if isinstance(task, str) else Task.TRANSCRIBE,
            language=_text(data.get("language")),
            prompt=_text(data.get("prompt")),
            temperature=_real(data.get("temperature")),
            word_timestamps=data.get("word_timestamps") is True,
            vad_filter=data.get("vad_filter") is True,
            beam_size=_whole(data.get("beam_size")),
            batch_size=_whole(data.get("batch_size")),
            diarization=DiarizationOptions.from_json(spk) if isinstance(spk, Mapping) else None,
            vad=VadParameters.from_json(vad) if isinstance(vad, Mapping) else None,
        )

    def fingerprint(self, model: str, audio_sha256: str) -> str:
        """Deduplication key: the same audio, model and options give the same key."""
        blob = json.dumps([audio_sha256, model, self.to_json()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Request:
    """A transcription request as parsed from the form: options plus how to deliver the result."""

    options: Options
    model: str | None = None
    response_format: ResponseFormat = ResponseFormat.JSON
    priority: int = 0
    webhook_url: str | None = None
    stream: bool = False
    warnings: list[str] = field(default_factory=list)


class Invalid(ValueError):
    """A form field has a value we cannot accept; the message names the field."""


#: Speaker fields (issue 19), parsed by asr_daemon.diarization.request.
DIARIZATION_FIELDS = frozenset(
    {
        "diarize",
        "num_speakers",
        "min_speakers",
        "max_speakers",
        "known_speaker_names[]",
        "known_speaker_names",
        "known_speaker_references[]",
        "known_speaker_references",
    }
)

_KNOWN_FIELDS = (
    frozenset(
        {
            "model",
            "language",
            "prompt",
            "response_format",
            "temperature",
            "timestamp_granularities[]",
            "timestamp_granularities",
            "task",
            "priority",
            "webhook_url",
            "stream",
            "vad_filter",
            "beam_size",
            "batch_size",
            "include[]",
            "chunking_strategy",
            *(f"chunking_strategy[{k}]" for k in ("type", "threshold", "silence_duration_ms", "prefix_padding_ms")),
        }
    )
    | DIARIZATION_FIELDS
)


def _one(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1 and len(set(values)) > 1:
        raise Invalid(f"field {name!r} was given {len(values)} times with different values")
    return values[0]


def _bool(name: str, raw: str | None) -> bool:
    if raw is None or raw == "":
        return False
    low = raw.strip().lower()
    if low in {"true", "1", "yes", "on"}:
        return True
    if low in {"false", "0", "no", "off"}:
        return False
    raise Invalid(f"{name} must be true or false, not {raw[:40]!r}")


def _number(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"{name} must be a number, not {raw[:40]!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise Invalid(f"{name} must be between {lo:g} and {hi:g}, not {raw[:40]}")
    return value


def parse_request(form: Mapping[str, list[str]], task: Task, *, allow_task_field: bool = False) -> Request:
    """Validate the non-file form fields of a transcription request.

    Raises `Invalid` with a message naming the offending field.
    """
    unknown = sorted(set(form) - _KNOWN_FIELDS)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(repr(u[:40]) for u in unknown[:5])}")
    raw_task = _one(form, "task")
    if raw_task is not None:
        if not allow_task_field:
            raise Invalid("field 'task' is not accepted here: use /v1/audio/translations to translate")
        if raw_task not in {t.value for t in Task}:
            raise Invalid(f"task must be 'transcribe' or 'translate', not {raw_task[:40]!r}")
        task = Task(raw_task)
    raw_format = _one(form, "response_format") or "json"
    if raw_format not in {f.value for f in ResponseFormat}:
        allowed = ", ".join(f.value for f in ResponseFormat)
        raise Invalid(f"response_format must be one of {allowed}, not {raw_format[:40]!r}")
    language = _one(form, "language") or None
    if language is not None:
        language = language.strip().lower()
        if language not in LANGUAGES:
            raise Invalid(f"language {language[:40]!r} is not supported: use an ISO-639-1 code such as 'en'")
    prompt = _one(form, "prompt") or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise Invalid(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
    raw_temp = _one(form, "temperature")
    temperature = _number("temperature", raw_temp, 0.0, 1.0) if raw_temp not in (None, "") else None
    grans = set(form.get("timestamp_granularities[]", [])) | set(form.get("timestamp_granularities", []))
    bad = grans - {"segment", "word"}
    if bad:
        raise Invalid(f"timestamp_granularities may hold 'segment' and 'word', not {min(bad)[:40]!r}")
    raw_beam = _one(form, "beam_size")
    beam = int(_number("beam_size", raw_beam, 1, 20)) if raw_beam not in (None, "") else None
    raw_batch = _one(form, "batch_size")
    batch = int(_number("batch_size", raw_batch, 0, 64)) if raw_batch not in (None, "") else None
    raw_priority = _one(form, "priority")
    priority = int(_number("priority", raw_priority, -100, 100)) if raw_priority not in (None, "") else 0
    webhook = _one(form, "webhook_url") or None
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise Invalid("webhook_url must be an http:// or https:// URL")
    if webhook is not None and len(webhook) > 2000:
        raise Invalid("webhook_url is longer than 2000 characters")
    model = _one(form, "model")
    if model is not None and len(model) > 200:
        raise Invalid("model name is longer than 200 characters")
    vad_filter, vad = _chunking(form)
    options = Options(
        task=task,
        language=language,
        prompt=prompt,
        temperature=temperature,
        word_timestamps="word" in grans,
        vad_filter=vad_filter,
        beam_size=beam,
        batch_size=batch,
        vad=vad,
    )
    return Request(
        options=options,
        model=model,
        response_format=ResponseFormat(raw_format),
        priority=priority,
        webhook_url=webhook,
        stream=_bool("stream", _one(form, "stream")),
    )


def _chunking(form: Mapping[str, list[str]]) -> tuple[bool, VadParameters | None]:
    """`vad_filter` and the VAD's settings: OpenAI's `chunking_strategy` as its SDK sends it, `auto` (faster-whisper
    cuts the audio in 30 s windows itself) or the fields of a `server_vad` object (Silero VAD skips silence)."""
    vad_filter = _bool("vad_filter", _one(form, "vad_filter"))
    plain = _one(form, "chunking_strategy")
    if plain not in (None, "", "auto"):
        raise Invalid(f"chunking_strategy must be 'auto' or an object with type 'server_vad', not {plain[:40]!r}")
    kind = _one(form, "chunking_strategy[type]")
    fields = [k for k in form if k.startswith("chunking_strategy[")]
    if not fields:
        return vad_filter, None
    if kind not in (None, "server_vad"):  # absent: the only type there is (a field may be checked alone)
        raise Invalid(f"chunking_strategy[type] must be 'server_vad', not {(kind or '')[:40]!r}")

    def number(name: str, hi: float) -> float | None:
        raw = _one(form, f"chunking_strategy[{name}]")
        return _number(f"chunking_strategy.{name}", raw, 0, hi) if raw not in (None, "") else None

    threshold = number("threshold", 1.0)
    silence, padding = number("silence_duration_ms", 10_000), number("prefix_padding_ms", 10_000)
    return True, VadParameters(
        threshold, None if silence is None else int(silence), None if padding is None else int(padding)
    )
