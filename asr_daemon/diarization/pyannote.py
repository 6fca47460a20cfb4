"""The stronger engine where the operator has it: pyannote.audio's `speaker-diarization-community-1`.

Gated on the Hugging Face hub (CC-BY-4.0), so it is never fetched on its own: the operator pulls it
with a token (`asrctl models pull diarization --engine pyannote`, HF_TOKEN) or imports a directory
holding the pipeline (`--from DIR`: its config.yaml and the weights it names). It needs the
pyannote.audio package (and so torch), which the default install leaves out.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from asr_daemon.diarization.engine import Params, Progress, Result, Stopped, Turn, Unavailable
from asr_daemon.engine import audio

REPO_ID = "pyannote/speaker-diarization-community-1"
SUBDIR = Path("diarization") / "pyannote"


def default_dir(models_dir: Path) -> Path:
    """Where an imported pipeline lives unless ASR_PYANNOTE_DIR says otherwise."""
    return models_dir / SUBDIR


#: the oldest pipeline configuration the engine runs (3.0 pipelines used onnxruntime embeddings)
MIN_PIPELINE_VERSION = (3, 1)


def _version(text: str) -> tuple[int, ...] | None:
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(x) for x in found.groups() if x is not None) if found else None


def config_version(config_text: str) -> tuple[int, ...] | None:
    """The `version:` a pipeline's config.yaml states (the pyannote.audio it was made for), or None."""
    found = re.search(r"^version:\s*['\"]?([0-9][0-9.]*)", config_text, re.MULTILINE)
    return _version(found.group(1)) if found else None


def check_versions(pipeline: tuple[int, ...] | None, package: str | None) -> None:
    """Raise `Unavailable` when a pipeline of version `pipeline` cannot run on pyannote.audio `package`."""
    if pipeline is None:
        raise Unavailable("the pipeline's config.yaml states no `version:` (the pyannote.audio it was made for)")
    shown = ".".join(map(str, pipeline))
    if pipeline[:2] < MIN_PIPELINE_VERSION:
        raise Unavailable(
            f"the pipeline is version {shown}, older than {'.'.join(map(str, MIN_PIPELINE_VERSION))}: "
            f"import {REPO_ID} instead"
        )
    have = _version(package) if package else None
    if have is not None and have[0] < pipeline[0]:
        raise Unavailable(
            f"the pipeline needs pyannote.audio {pipeline[0]}.x, this host has {package}: "
            f"pip install 'pyannote.audio>={pipeline[0]}'"
        )


def check_dir(directory: Path) -> None:
    """Raise `Unavailable` unless `directory` holds a pyannote pipeline: a config.yaml with a `pipeline:`
    section and a `version:` this engine runs."""
    config = directory / "config.yaml"
    if not config.is_file():
        raise Unavailable(
            f"no pyannote pipeline in {directory} (config.yaml missing): import one with "
            "`asrctl models pull diarization --engine pyannote --from DIR`"
        )
    text = config.read_text(errors="replace")
    if not re.search(r"^pipeline:", text, re.MULTILINE):
        raise Unavailable(f"{config} is not a pyannote pipeline configuration (no `pipeline:` section)")
    try:
        check_versions(config_version(text), None)
    except Unavailable as exc:
        raise Unavailable(f"{config}: {exc}") from None


def package_version() -> str | None:
    """The installed pyannote.audio's version, found without importing it (which imports torch); None if absent."""
    try:
        return importlib.metadata.version("pyannote.audio")
    except importlib.metadata.PackageNotFoundError:
        return None


def preflight(directory: Path) -> str:
    """What `PyannoteEngine` would need, checked without loading anything: the directory, the package and
    their versions. Raises `Unavailable` with what to do; returns a one-line description."""
    check_dir(directory)
    package = package_version()
    if package is None:
        raise Unavailable(
            "ASR_DIARIZATION_ENGINE=pyannote needs the pyannote.audio package: pip install pyannote.audio"
        )
    pipeline = config_version((directory / "config.yaml").read_text(errors="replace"))
    check_versions(pipeline, package)
    return f"pipeline {'.'.join(map(str, pipeline or ()))} in {directory}, pyannote.audio {package}"


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
        preflight(directory)
        try:
            from pyannote.audio import Pipeline
        except ImportError:
            raise Unavailable(
                "ASR_DIARIZATION_ENGINE=pyannote needs the pyannote.audio package: pip install pyannote.audio"
            ) from None
        try:
            pipeline = Pipeline.from_pretrained(directory)
        except Exception as exc:  # noqa: BLE001 - missing weights, torch or version errors: all "cannot load here"
            raise Unavailable(
                f"pyannote could not load the pipeline in {directory}: {type(exc).__name__}: {exc}"
            ) from None
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

        wav = audio.decode(path, params.max_seconds)
        seconds = len(wav) / audio.SAMPLE_RATE
        out = self.pipeline(
            {"waveform": torch.from_numpy(wav)[None], "sample_rate": audio.SAMPLE_RATE},
            num_speakers=params.num_speakers,
            min_speakers=params.min_speakers,
            max_speakers=params.max_speakers,
            hook=make_hook(seconds, on_progress, should_stop),
        )
        on_progress(seconds)
        return Result(turns=turns_from(out), centroids={})


def make_hook(seconds: float, on_progress: Progress, should_stop: Callable[[], bool]) -> Callable[..., None]:
    """The pipeline's `hook`: stops it (`Stopped`) when asked, reports each step's share of the file."""

    def hook(
        step: str, artifact: Any, file: Any = None, total: int | None = None, completed: int | None = None
    ) -> None:
        if should_stop():
            raise Stopped
        if total and completed is not None:
            on_progress(seconds * completed / total)

    return hook


def turns_from(output: Any) -> list[Turn]:
    """Turns from the pipeline's output: pyannote.audio 4's `DiarizeOutput` (its `speaker_diarization`) or
    3.x's `Annotation`; speakers numbered in order of first appearance, turns in time order."""
    annotation = getattr(output, "speaker_diarization", output)
    tracks = sorted(annotation.itertracks(yield_label=True), key=lambda t: (t[0].start, t[0].end))
    order: dict[str, int] = {}
    turns = []
    for segment, _, label in tracks:
        spk = order.setdefault(label, len(order))
        turns.append(Turn(round(segment.start, 3), round(segment.end, 3), spk))
    return turns
