"""The Realtime transcription protocol's events: the session's configuration, parsing client
events, and building server events (GA names; `transcription_session.update` is the beta alias).

Shapes follow OpenAI's (the openai SDK's `openai.types.realtime`): a session is
`{"type": "transcription", "audio": {"input": {"format", "transcription", "turn_detection"}}}`;
errors are `{"type": "error", "event_id", "error": {"type", "code", "message", "param", "event_id"}}`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Any

from asr_daemon import jobs
from asr_daemon.live.codec import FORMATS, PCM_RATES, AudioFormat
from asr_daemon.live.vad import VadOptions

#: Client event types this server understands.
CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
    }
)
#: `semantic_vad` (the openai SDK offers it) is served as server VAD: its `eagerness` picks the silence that
#: ends an utterance (`auto` is `medium`, OpenAI's default; medium is server VAD's default 500 ms).
EAGERNESS_MS = {"low": 1000, "medium": 500, "high": 250, "auto": 500}
#: The beta API's wire formats, by their GA equivalent.
BETA_FORMATS = {
    "pcm16": AudioFormat("audio/pcm", 24000),
    "g711_ulaw": AudioFormat("audio/pcmu", 8000),
    "g711_alaw": AudioFormat("audio/pcma", 8000),
}


class ProtocolError(Exception):
    """A client event we refuse: sent back as an `error` event; the session stays open."""

    def __init__(self, code: str, message: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.kind = code, message, param, kind


def loads(text: str | bytes) -> Any:
    """A client's JSON; `ProtocolError("invalid_json")` when it is not JSON, or nested past what the
    parser follows (`[[[…]]]` thousands deep raises RecursionError, which is the client's fault too)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "the event is not valid JSON (or is nested too deeply)") from None


def new_id(prefix: str) -> str:
    """A fresh id like OpenAI's (`event_…`, `item_…`, `sess_…`)."""
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass(frozen=True)
class SessionConfig:
    """What a session was configured with (`session.update`)."""

    format: AudioFormat = AudioFormat()  # noqa: RUF009  # frozen, so sharing the default is safe
    model: str | None = None  # None: the daemon's default model
    language: str | None = None
    prompt: str | None = None
    vad: VadOptions | None = VadOptions()  # noqa: RUF009  # frozen; None: the client commits by hand

    def view(self, session_id: str, job_id: str | None, model_name: str) -> dict[str, Any]:
        """The session object of `session.created` / `session.updated` (with our `job_id`)."""
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "job_id": job_id,
            "audio": {
                "input": {
                    "format": self.format.view(),
                    "transcription": {"model": model_name, "language": self.language, "prompt": self.prompt or ""},
                    "turn_detection": self.vad.view() if self.vad else None,
                    "noise_reduction": None,
                }
            },
            "include": [],
        }


def _dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError("invalid_type", f"{param} must be an object", param)
    return value


def _format(value: Any, param: str) -> AudioFormat:
    if isinstance(value, str) and value in BETA_FORMATS:  # beta: "pcm16"
        return BETA_FORMATS[value]
    fmt = _dict(value, param)
    kind = fmt.get("type", "audio/pcm")
    if kind not in FORMATS:
        raise ProtocolError("invalid_value", f"{param}.type must be one of {', '.join(FORMATS)}", f"{param}.type")
    if kind != "audio/pcm":
        return AudioFormat(kind, 8000)
    rate = fmt.get("rate", 24000)
    if rate not in PCM_RATES:
        raise ProtocolError(
            "invalid_value", f"{param}.rate must be 24000 (or 16000, this server's extension)", f"{param}.rate"
        )
    return AudioFormat("audio/pcm", int(rate))


def _number(d: dict[str, Any], key: str, lo: float, hi: float, default: float, param: str) -> float:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ProtocolError("invalid_value", f"{param}.{key} must be a number from {lo:g} to {hi:g}", f"{param}.{key}")
    return float(value)


def _vad(value: Any, current: VadOptions | None, param: str) -> VadOptions | None:
    if value is None:
        return None
    td = _dict(value, param)
    kind = td.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ProtocolError("invalid_value", f"{param}.type must be 'server_vad' or 'semantic_vad' (or null for "
                            "manual commits)", f"{param}.type")  # fmt: skip
    base = current or VadOptions()
    if kind == "semantic_vad":  # served as server VAD: its eagerness is how long a silence ends a turn
        eagerness = td.get("eagerness", "auto")
        eagerness = "auto" if eagerness is None else eagerness
        if not isinstance(eagerness, str) or eagerness not in EAGERNESS_MS:
            raise ProtocolError("invalid_value", f"{param}.eagerness must be one of {', '.join(EAGERNESS_MS)}",
                                f"{param}.eagerness")  # fmt: skip
        return replace(base, silence_duration_ms=EAGERNESS_MS[eagerness])
    return VadOptions(
        threshold=_number(td, "threshold", 0.0, 1.0, base.threshold, param),
        prefix_padding_ms=int(_number(td, "prefix_padding_ms", 0, 5000, base.prefix_padding_ms, param)),
        silence_duration_ms=int(_number(td, "silence_duration_ms", 100, 10000, base.silence_duration_ms, param)),
    )


def _transcription(value: Any, cfg: SessionConfig, param: str) -> SessionConfig:
    if value is None:
        return cfg
    t = _dict(value, param)
    model, language, prompt = t.get("model", cfg.model), t.get("language", cfg.language), t.get("prompt", cfg.prompt)
    if model is not None and not isinstance(model, str):
        raise ProtocolError("invalid_type", f"{param}.model must be a string", f"{param}.model")
    if language in ("", None):
        language = None
    elif not isinstance(language, str) or language not in jobs.LANGUAGES:
        raise ProtocolError("invalid_value", f"{param}.language must be an ISO-639-1 code Whisper knows", param)
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > jobs.MAX_PROMPT_CHARS or "\x00" in prompt):
        raise ProtocolError("invalid_value", f"{param}.prompt must be text of at most 2000 characters", param)
    return replace(cfg, model=model or None, language=language, prompt=prompt or None)


def parse_session(event_type: str, session: Any, cfg: SessionConfig) -> SessionConfig:
    """The configuration after a `session.update` (or beta `transcription_session.update`)."""
    s = _dict(session, "session")
    if event_type == "transcription_session.update":  # beta: flat fields
        if "input_audio_format" in s:
            cfg = replace(cfg, format=_format(s["input_audio_format"], "session.input_audio_format"))
        cfg = _transcription(s.get("input_audio_transcription"), cfg, "session.input_audio_transcription")
        if "turn_detection" in s:
            cfg = replace(cfg, vad=_vad(s["turn_detection"], cfg.vad, "session.turn_detection"))
        return cfg
    if s.get("type", "transcription") != "transcription":
        raise ProtocolError(
            "invalid_value",
            "only transcription sessions are served here: session.type must be 'transcription'",
            "session.type",
        )
    audio_input = _dict(_dict(s.get("audio", {}), "session.audio").get("input", {}), "session.audio.input")
    if "format" in audio_input:
        cfg = replace(cfg, format=_format(audio_input["format"], "session.audio.input.format"))
    cfg = _transcription(audio_input.get("transcription"), cfg, "session.audio.input.transcription")
    if "turn_detection" in audio_input:
        cfg = replace(cfg, vad=_vad(audio_input["turn_detection"], cfg.vad, "session.audio.input.turn_detection"))
    return cfg


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A server event of type `kind` with a fresh event_id."""
    return {"type": kind, "event_id": new_id("event"), **fields}


def error(code: str, message: str, *, param: str | None = None, client_event: str | None = None,
          kind: str = "invalid_request_error") -> dict[str, Any]:  # fmt: skip
    """An `error` event (OpenAI's shape)."""
    return event(
        "error", error={"type": kind, "code": code, "message": message, "param": param, "event_id": client_event}
    )
