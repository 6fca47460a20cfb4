"""The stronger engine where the operator has it: pyannote.audio's `speaker-diarization-community-1`.

Gated on the Hugging Face hub (CC-BY-4.0), so it is never fetched on its own: the operator pulls it
with a token (`asrctl models pull diarization --engine pyannote`, HF_TOKEN) or imports a directory
holding the pipeline (`--from DIR`: its config.yaml and the weights it names). It needs the
pyannote.audio package (and so torch), which the default install leaves out.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from asr_daemon import audio
from asr_daemon.diarization.engine import Params, Progress, Result, Stopped, Turn, Unavailable

REPO_ID = "pyannote/speaker-diarization-community-1"
SUBDIR = Path("diarization") / "pyannote"


def default_dir(models_dir: Path) -> Path:
    """Where an imported pipeline lives unless ASR_PYANNOTE_DIR says otherwise."""
    return models_dir / SUBDIR


def check_dir(directory: Path) -> None:
    """Raise `Unavailable` unless `directory` looks like a pyannote pipeline (a config.yaml naming a pipeline)."""
    config = directory / "config.yaml"
    if not config.is_file():
        raise Unavailable(
            f"no pyannote pipeline in {directory} (config.yaml missing): import one with "
            "`asrctl models pull diarization --engine pyannote --from DIR`"
        )
    text = config.read_text(errors="replace")
    if "pipeline" not in text:
        raise Unavailable(f"{config} is not a pyannote pipeline configuration (no `pipeline:` section)")


def import_dir(source: Path, models_dir: Path) -> Path:
    """Copy a pipeline directory into the models directory (atomically); returns where it went."""
    check_dir(source)
    dest = default_dir(models_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".pyannote-"))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def pull(models_dir: Path, token: str | None) -> Path:
    """Download the gated pipeline from the hub with the operator's token into the models directory."""
    from huggingface_hub import snapshot_download

    dest = default_dir(models_dir)
    snapshot_download(REPO_ID, local_dir=str(dest), token=token)
    check_dir(dest)
    return dest


class PyannoteEngine:
    """pyannote.audio's pipeline, loaded from a local directory."""

    name = "pyannote"

    def __init__(self, directory: Path) -> None:
        check_dir(directory)
        try:
            from pyannote.audio import Pipeline
        except ImportError:
            raise Unavailable(
                "ASR_DIARIZATION_ENGINE=pyannote needs the pyannote.audio package: pip install pyannote.audio"
            ) from None
        pipeline = Pipeline.from_pretrained(directory)
        if pipeline is None:
            raise Unavailable(f"pyannote could not load the pipeline in {directory}")
        self.pipeline: Any = pipeline

    def memory_bytes(self) -> int:
        """Weights and activations: about 1 GB for community-1 on the CPU."""
        return 1 << 30

    def unload(self) -> None:
        """Drop the pipeline."""
        self.pipeline = None

    def embed(self, wav: np.ndarray) -> np.ndarray | None:
        """Known-speaker matching is not offered with this engine."""
        return None

    def run(self, path: Path, params: Params, on_progress: Progress, should_stop: Callable[[], bool]) -> Result:
        """Diarize with the pipeline; its hook reports progress and stops it between steps."""
        import torch

        wav = audio.decode(path)
        seconds = len(wav) / audio.SAMPLE_RATE

        def hook(
            step: str, artifact: Any, file: Any = None, total: int | None = None, completed: int | None = None
        ) -> None:
            if should_stop():
                raise Stopped
            if total and completed is not None:
                on_progress(seconds * completed / total)

        out = self.pipeline(
            {"waveform": torch.from_numpy(wav)[None], "sample_rate": audio.SAMPLE_RATE},
            num_speakers=params.num_speakers,
            min_speakers=params.min_speakers,
            max_speakers=params.max_speakers,
            hook=hook,
        )
        annotation = getattr(out, "speaker_diarization", out)
        order: dict[str, int] = {}
        turns = []
        for segment, _, label in annotation.itertracks(yield_label=True):
            spk = order.setdefault(label, len(order))
            turns.append(Turn(round(segment.start, 3), round(segment.end, 3), spk))
        on_progress(seconds)
        return Result(turns=sorted(turns, key=lambda t: (t.start, t.end)), centroids={})
