"""What this host can serve over Wyoming: the local models, their languages, and which one a command gets.

`describe` answers Wyoming's `describe` with one `asr` program whose models are the models on disk
(an absent model cannot serve a voice command within a second, so it is not offered). A model's
languages come from its vocabulary: English-only Whisper models (`*.en`) have 51864 tokens,
multilingual ones 51865 and more (large-v3 adds Cantonese, `yue`, with 51866): `modelchoice.languages`.
"""

from __future__ import annotations

from pathlib import Path

from wyoming.info import AsrModel, AsrProgram, Attribution, Info

from asr_daemon import __version__, errors, jobs
from asr_daemon.config import Settings
from asr_daemon.engine import modelchoice, store

PROGRAM = "asr-server"
"""The program's name in `info`; a `transcribe` naming it means the default model."""
ATTRIBUTION = Attribution(name="OpenAI Whisper (faster-whisper, CTranslate2)", url="https://github.com/openai/whisper")


def local_models(settings: Settings) -> list[tuple[str, Path]]:
    """(name, path) of every model on disk, the default first."""
    found = [(n, p) for n in store.names(settings.models_dir) if (p := store.local_path(settings.models_dir, n))]
    return sorted(found, key=lambda np: np[0] != settings.model)


def describe(settings: Settings) -> Info:
    """The `info` event's content: one ASR program listing the servable models."""
    entries = [
        AsrModel(
            name=name,
            attribution=ATTRIBUTION,
            installed=True,
            description=f"Whisper {name}" + (" (default)" if name == settings.model else ""),
            version=None,
            languages=modelchoice.languages(name, path),
        )
        for name, path in local_models(settings)
    ]
    program = AsrProgram(
        name=PROGRAM,
        attribution=Attribution(name="asr-server", url="https://github.com/openai/whisper"),
        installed=True,
        description="Whisper speech-to-text, started on demand",
        version=__version__,
        models=entries,
        supports_transcript_streaming=True,
    )
    return Info(asr=[program])


def normalize_language(raw: object) -> str | None:
    """A client's language tag as a Whisper code (`en-US` → `en`); None for none; `Refused` for junk."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > 35:
        raise errors.BadRequest(f"language must be a code such as 'en', not {str(raw)[:40]!r}")
    code = raw.strip().lower().replace("_", "-")
    if code not in jobs.LANGUAGES:
        code = code.split("-", 1)[0]
    if code not in jobs.LANGUAGES:
        raise errors.BadRequest(f"language {raw[:40]!r} is not one Whisper knows: use a code such as 'en'")
    return code


def choose(settings: Settings, name: object, language: str | None) -> str:
    """The model a command runs on: the one it names, else the default if it speaks `language`, else the
    first local model that does (Home Assistant names no model: a German pipeline on a host whose
    default is tiny.en gets a multilingual model). Raises a domain error when none can."""
    if name is not None and not isinstance(name, str):
        raise errors.BadRequest("the model name must be a string")
    if name and name != PROGRAM and name not in modelchoice.DEFAULT_ALIASES:
        picked, path = modelchoice.resolve(settings.models_dir, name, settings.model)
        if language is not None and language not in modelchoice.languages(picked, path):
            raise errors.BadRequest(f"model {picked!r} does not transcribe language {language!r}")
        return picked
    local = local_models(settings)
    for candidate, path in local:
        if language is None or language in modelchoice.languages(candidate, path):
            return candidate
    if not local:
        raise errors.ModelNotFound(settings.model, known=settings.model in store.KNOWN)
    raise errors.BadRequest(f"no model on this host transcribes language {language!r}")
