"""What `asrctl status` reads off the host: systemctl, nvidia-smi and the access log (stand-in tools)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from asr_daemon.ops import host


def stand_in(bindir: Path, name: str, output: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put an executable `name` printing `output` first on PATH."""
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_gpus_parses_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU name and memory come from nvidia-smi's CSV; no nvidia-smi means None."""
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert host.gpus() is None
    monkeypatch.setenv("PATH", path)
    stand_in(tmp_path / "bin", "nvidia-smi", "NVIDIA H100 80GB HBM3, 1024, 80000, 81559", monkeypatch)
    assert host.gpus() == [
        {"name": "NVIDIA H100 80GB HBM3", "memory_used_mib": 1024, "memory_free_mib": 80000, "memory_total_mib": 81559}
    ]


def test_unit_state_and_environment_from_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemctl show output becomes loaded/active/sub/since; Environment= becomes a dict."""
    stand_in(
        tmp_path / "bin",
        "systemctl",
        "LoadState=loaded\nActiveState=inactive\nSubState=dead\nStateChangeTimestamp=Wed 2026-11-25 16:30:35 UTC",
        monkeypatch,
    )
    assert host.unit_state("asr-server.service") == {
        "loaded": True,
        "active": "inactive",
        "sub": "dead",
        "since": "2026-11-25T16:30:35+00:00",
    }
    stand_in(tmp_path / "bin", "systemctl", 'ASR_UDS=/run/asr-server/http.sock "ASR_X=a b"', monkeypatch)
    assert host.service_environment("asr-server.service") == {"ASR_UDS": "/run/asr-server/http.sock", "ASR_X": "a b"}


def test_last_request_skips_probes_and_sees_the_busy_marker(tmp_path: Path) -> None:
    """The last non-probe line's end time counts; a newer busy marker (requests in flight) wins."""
    log = tmp_path / "access.log"
    assert host.last_request(log) is None
    real = "2026-11-25T10:00:00.000+00:00"
    lines = [
        {"start": real, "end": real, "path": "/v1/jobs", "probe": False},
        {"start": "2026-11-25T11:00:00+00:00", "end": "2026-11-25T11:00:00+00:00", "path": "/readyz", "probe": True},
        "not json",
    ]
    log.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    assert host.last_request(log) == datetime.fromisoformat(real)
    busy = tmp_path / "access.busy"
    busy.write_text("")
    now = time.time()
    os.utime(busy, (now, now))
    assert host.last_request(log) == datetime.fromtimestamp(now, UTC)
