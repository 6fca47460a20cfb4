"""Which Whisper model a request or the daemon gets, and where it is on disk.

- `resolve(models_dir, name, default) -> (name, path)`: a requested name (an OpenAI alias such as
  `whisper-1` means the configured default) to its directory, raising `errors.ModelNotFound` (404).
- `for_language(models_dir, name, default, language) -> name`: `resolve`, refusing (400) a model that
  does not transcribe the language asked for (an English-only `*.en` model and `de`).
- `languages(name, path)`: the languages a model on disk transcribes, from its vocabulary.
- `for_device(settings)`: the default model the device is worth (`GPU_DEFAULT` on CUDA).

Light: no faster-whisper; the models in memory are `asr_daemon.engine.models`' cache, the store on disk
(registry, pull, import) is `asr_daemon.engine.store`. `asr_daemon.engine.models` re-exports these names.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from asr_daemon import errors, jobs
from asr_daemon.config import Settings
from asr_daemon.engine import device, store

log = logging.getLogger(__name__)

#: OpenAI model ids that mean "the configured default model".
DEFAULT_ALIASES = frozenset({"whisper-1", "default", ""})

#: The default model on a CUDA host when `ASR_MODEL` is not set and it is on disk: the common choice
#: for a 16 GB card (float16 ~1.6 GB of VRAM; `ASR_COMPUTE_TYPE=int8_float16` halves that).
GPU_DEFAULT = "large-v3-turbo"
#: Whisper vocabularies: English-only models (`*.en`) have one token less; large-v3 adds Cantonese (`yue`)
MULTILINGUAL_VOCAB = 51865
YUE_VOCAB = 51866


def for_device(settings: Settings) -> Settings:
    """The settings with the default model the device is worth: `GPU_DEFAULT` on CUDA, when the
    operator did not choose `ASR_MODEL` and it is on disk; otherwise unchanged (logged on CUDA).

    A host without an NVIDIA device node is not probed (importing ctranslate2 to ask would slow
    every cold start of a CPU host)."""
    if "model" in settings.model_fields_set or settings.device == "cpu":
        return settings
    if settings.device == "auto" and not device.nvidia_present():
        return settings
    if device.resolve_device(settings.device) != "cuda":
        return settings
    if store.local_path(settings.models_dir, GPU_DEFAULT) is None:
        log.info(
            "model_gpu_default_absent",
            extra={"model": GPU_DEFAULT, "using": settings.model, "fix": f"asrctl models pull {GPU_DEFAULT}"},
        )
        return settings
    log.info("model_gpu_default", extra={"model": GPU_DEFAULT})
    return settings.model_copy(update={"model": GPU_DEFAULT})


def resolve(models_dir: Path, name: str | None, default: str) -> tuple[str, Path]:
    """Map a requested model name to (canonical name, directory), or raise `ModelNotFound`."""
    wanted = default if name is None or name in DEFAULT_ALIASES else name
    path = store.local_path(models_dir, wanted)
    if path is None:
        raise errors.ModelNotFound(wanted, known=wanted in store.KNOWN)
    return wanted, path


def for_language(models_dir: Path, name: str | None, default: str, language: str | None) -> str:
    """The model a request runs on (`resolve`); a `BadRequest` naming a model that would do when it does not
    transcribe `language` (faster-whisper would silently transcribe as English instead)."""
    picked, path = resolve(models_dir, name, default)
    if language is None or language in languages(picked, path):
        return picked
    others = [
        n for n in store.names(models_dir) if (p := store.local_path(models_dir, n)) and language in languages(n, p)
    ]
    hint = (
        f"use a multilingual model such as {others[0]!r}"
        if others
        else "pull a multilingual one (`asrctl models pull base`)"
    )
    raise errors.BadRequest(f"model {picked!r} transcribes English only, not language {language!r}: {hint}")


@functools.lru_cache(maxsize=64)
def _vocab_size(path: str, mtime: float) -> int:
    """Lines of a model's vocabulary.txt (cached per file version); 0 when it has none."""
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def languages(name: str, path: Path) -> list[str]:
    """The languages the model at `path` transcribes (ISO 639-1 codes, sorted)."""
    vocab = path / "vocabulary.txt"
    try:
        size = _vocab_size(str(vocab), vocab.stat().st_mtime)
    except OSError:
        size = 0
    if size == 0:  # no vocabulary.txt (tokenizer.json only): the name tells
        size = MULTILINGUAL_VOCAB - 1 if name.endswith(".en") else MULTILINGUAL_VOCAB
    if size < MULTILINGUAL_VOCAB:
        return ["en"]
    return sorted(lang for lang in jobs.LANGUAGES if lang != "yue" or size >= YUE_VOCAB)
