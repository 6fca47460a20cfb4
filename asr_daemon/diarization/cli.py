"""`asrctl models pull diarization` / `asrctl models ensure diarization`: put a diarization engine's weights
in place (resemblyzer's encoder from the installed package, a file, or PyPI; pyannote's pipeline from a
directory or, with a Hugging Face token, the hub)."""

from __future__ import annotations

import os
from pathlib import Path

from asr_daemon.config import Settings
from asr_daemon.diarization import fetch, pyannote, weights
from asr_daemon.diarization.engine import Unavailable

NAME = "diarization"


class PullError(RuntimeError):
    """The weights could not be put in place; the message says why."""


class UnknownEngine(PullError):
    """The engine named is not one this daemon has (a usage error: `asrctl` exits 2)."""


def pull(settings: Settings, *, engine: str | None = None, source: Path | None = None, force: bool = False) -> str:
    """Install the configured (or named) engine's weights; a one-line summary."""
    engine = engine or settings.diarization_engine
    if engine not in ("resemblyzer", "pyannote"):
        raise UnknownEngine(f"unknown diarization engine {engine!r}: resemblyzer or pyannote")
    try:
        if engine == "pyannote":
            if source is not None:
                dest = pyannote.import_dir(source, settings.models_dir)
                return f"diarization (pyannote): imported into {dest}"
            token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
            if not token:
                raise PullError("pyannote's pipeline is gated: set HF_TOKEN, or import a directory with --from DIR")
            return f"diarization (pyannote): downloaded into {pyannote.pull(settings.models_dir, token)}"
        present = fetch.installed(settings.models_dir)
        path = fetch.install(settings.models_dir, source, force=force)
        how = "already present" if present and not force and source is None else "installed"
        return f"diarization (resemblyzer): {how} ({path})"
    except PullError:
        raise
    except (weights.WeightsError, Unavailable, OSError) as exc:
        raise PullError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - network and hub failures of every kind become one clear line
        raise PullError(f"{type(exc).__name__}: {exc}") from None
