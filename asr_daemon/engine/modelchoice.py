"""Which Whisper model a request or the daemon gets, and where it is on disk.

- `resolve(models_dir, name, default) -> (name, path)`: a requested name (an OpenAI alias such as
  `whisper-1` means the configured default) to its directory, raising `errors.ModelNotFound` (404).
- `for_device(settings)`: the default model the device is worth (`GPU_DEFAULT` on CUDA).

Light: no faster-whisper; the models in memory are `asr_daemon.engine.models`' cache, the store on disk
(registry, pull, import) is `asr_daemon.engine.store`. `asr_daemon.engine.models` re-exports these names.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr_daemon import errors
from asr_daemon.config import Settings
from asr_daemon.engine import device, store

log = logging.getLogger(__name__)

#: OpenAI model ids that mean "the configured default model".
DEFAULT_ALIASES = frozenset({"whisper-1", "default", ""})

#: The default model on a CUDA host when `ASR_MODEL` is not set and it is on disk: the common choice
#: for a 16 GB card (float16 ~1.6 GB of VRAM; `ASR_COMPUTE_TYPE=int8_float16` halves that).
GPU_DEFAULT = "large-v3-turbo"


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
