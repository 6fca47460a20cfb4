"""Speaker diarization (issue 19): who spoke when, as a stored step of a job.

- `engine`: the seam (Engine protocol, Params, Turn, Holder), `offline`: the default engine
  (resemblyzer's encoder in numpy + Silero VAD + clustering), `pyannote`: pyannote.audio's pipeline.
- `weights`/`fetch`: the offline engine's weights from resemblyzer's wheel, without torch.
- `request`: the request fields; `step`: the worker's step; `store`: its SQL; `render`: speakers in
  every output format.
"""

from __future__ import annotations

from asr_daemon.config import Settings
from asr_daemon.diarization.engine import Engine, Holder


def loader(settings: Settings) -> Engine:
    """Load the configured engine (blocking); raises `engine.Unavailable` with what to do."""
    if settings.diarization_engine == "pyannote":
        from asr_daemon.diarization import pyannote

        return pyannote.PyannoteEngine(settings.pyannote_dir or pyannote.default_dir(settings.models_dir))
    from asr_daemon.diarization import offline

    return offline.OfflineEngine(settings.models_dir, settings.diarization_threshold)


def holder_from_settings(settings: Settings) -> Holder:
    """The process's diarization engine holder (nothing is loaded until the first use)."""
    return Holder(lambda: loader(settings))
