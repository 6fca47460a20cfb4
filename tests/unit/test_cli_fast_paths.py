"""`asrctl serve`, `worker` and `idle-watch` start without the whole command tree's heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
sys.argv = ["asrctl", {command!r}, "--help"]
from asr_daemon.cli import main
try:
    main()
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("numpy", "av", "faster_whisper", "ctranslate2") if m in sys.modules))
"""


@pytest.mark.parametrize("command", ["idle-watch", "worker"])
def test_unit_commands_import_no_numpy_av_or_model_libraries(command: str) -> None:
    """The idle watcher (and the worker's --help) load neither numpy, av nor the model libraries: the
    watcher's unit filters syscalls numpy's OpenBLAS makes, and it starts beside every daemon."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "HEAVY []" in out, out
    assert "Usage" in out or "usage" in out, out
