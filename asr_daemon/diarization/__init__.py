"""Speaker diarization (issue 19): who spoke when, as a stored step of a job.

- `engine`: the seam (Engine protocol, Params, Turn, Holder), `offline`: the default engine
  (resemblyzer's encoder in numpy + Silero VAD + clustering), `pyannote`: pyannote.audio's pipeline.
- `weights`/`fetch`: the offline engine's weights from resemblyzer's wheel, without torch.
- `request`: the request fields; `step`: the worker's step; `store`: its SQL; `render`: speakers in
  every output format.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr_daemon.config import Settings
from asr_daemon.diarization.engine import Engine, Holder, Unavailable

log = logging.getLogger(__name__)


def loader(settings: Settings) -> Engine:
    """Load the configured engine (blocking); raises `engine.Unavailable` with what to do."""
    if settings.diarization_engine == "pyannote":
        from asr_daemon.diarization import pyannote

        return pyannote.PyannoteEngine(pyannote_dir(settings))
    from asr_daemon.diarization import offline

    return offline.OfflineEngine(settings.models_dir, settings.diarization_threshold)


def pyannote_dir(settings: Settings) -> Path:
    """Where the pyannote pipeline is read from."""
    from asr_daemon.diarization import pyannote

    return settings.pyannote_dir or pyannote.default_dir(settings.models_dir)


def status(settings: Settings) -> str:
    """Check, without loading anything, that the configured engine can load; a one-line description.

    Raises `engine.Unavailable` with what to do (for `asrctl doctor` and the daemon's start)."""
    if settings.diarization_engine == "pyannote":
        from asr_daemon.diarization import pyannote

        return "pyannote: " + pyannote.preflight(pyannote_dir(settings))
    from asr_daemon.diarization import fetch

    if fetch.installed(settings.models_dir):
        return f"resemblyzer: {fetch.encoder_dir(settings.models_dir)}"
    if fetch.package_checkpoint() is not None:
        return "resemblyzer: installed from the resemblyzer package at first use"
    raise Unavailable("diarization weights not installed: run `asrctl models pull diarization`")


def _load_or_fall_back(settings: Settings) -> Engine:
    """The configured engine; when pyannote's cannot load here, the offline engine, with a warning (a request
    for speakers then gets a correct answer, not a 5xx; the start-up log and `asrctl doctor` say why)."""
    try:
        return loader(settings)
    except Unavailable as exc:
        if settings.diarization_engine != "pyannote":
            raise
        log.warning("diarization_engine_fallback", extra={"configured": "pyannote", "reason": str(exc)})
        return loader(settings.model_copy(update={"diarization_engine": "resemblyzer"}))


def announce(settings: Settings) -> None:
    """Log at the daemon's start whether the configured engine can load (nothing is loaded)."""
    try:
        log.info("diarization_engine_ready", extra={"detail": status(settings)})
    except Unavailable as exc:
        fallback = settings.diarization_engine == "pyannote"
        log.warning(
            "diarization_engine_unavailable",
            extra={"engine": settings.diarization_engine, "reason": str(exc), "falls_back": fallback},
        )


def holder_from_settings(settings: Settings) -> Holder:
    """The process's diarization engine holder: nothing is loaded until the first use, and the engine is
    unloaded after ASR_MODEL_IDLE_TTL seconds unused, like the Whisper models."""
    return Holder(lambda: _load_or_fall_back(settings), idle_ttl=settings.model_idle_ttl)
