"""The model and the advice a CUDA host gets: large-v3-turbo when present, the sm_120 facts in doctor."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from asr_daemon.cli.doctor import blackwell_fixes
from asr_daemon.config import Settings
from asr_daemon.engine import modelchoice


def _state_with(tmp_path: Path, models_dir: Path, *names: str) -> Path:
    """A state directory whose models/ holds tiny.en's files under each of `names` (a stand-in:
    large-v3-turbo's weights cannot be had here, and only the directory's presence matters)."""
    for name in names:
        shutil.copytree(models_dir / "tiny.en", tmp_path / "models" / name)
    return tmp_path


def test_cuda_host_gets_large_v3_turbo_when_present(tmp_path: Path, models_dir: Path) -> None:
    """On CUDA with ASR_MODEL unset, the default becomes large-v3-turbo if it is on disk."""
    state = _state_with(tmp_path, models_dir, "large-v3-turbo")
    assert modelchoice.for_device(Settings(state_dir=state, device="cuda")).model == "large-v3-turbo"


def test_an_operators_choice_and_the_cpu_are_left_alone(tmp_path: Path, models_dir: Path) -> None:
    """ASR_MODEL set by the operator, or the CPU as the device, keep the configured model."""
    state = _state_with(tmp_path, models_dir, "large-v3-turbo")
    assert modelchoice.for_device(Settings(state_dir=state, device="cuda", model="base")).model == "base"
    assert modelchoice.for_device(Settings(state_dir=state, device="cpu")).model == "base"


def test_absent_gpu_default_falls_back_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without large-v3-turbo on disk the default stays, and one log line names the model and the fix."""
    with caplog.at_level(logging.INFO, logger="asr_daemon.engine.modelchoice"):
        assert modelchoice.for_device(Settings(state_dir=tmp_path, device="cuda")).model == "base"
    (record,) = [r for r in caplog.records if r.message == "model_gpu_default_absent"]
    assert record.fix == "asrctl models pull large-v3-turbo"  # type: ignore[attr-defined]


def test_blackwell_needs_ctranslate2_4_7_and_torch_with_sm_120() -> None:
    """Doctor names the sm_120 fixes: ctranslate2 >= 4.7 for int8, a torch build with sm_120 kernels."""
    old = blackwell_fixes("12.0", "4.6.2", ["sm_80", "sm_90"])
    assert len(old) == 2
    assert "ctranslate2>=4.7" in old[0] and "CUBLAS_STATUS_NOT_SUPPORTED" in old[0]
    assert "sm_120" in old[1] and "cuda" in old[1]
    assert blackwell_fixes("12.0", "4.8.5", ["sm_90", "sm_120"]) == []
    assert blackwell_fixes("8.9", "4.5.0", ["sm_80"]) == [], "not a Blackwell card: nothing to say"
