"""Helpers for checking systemd unit files with the real `systemd-analyze`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of `root/etc/systemd/system/unit`, with `root` as the file-system root."""
    return subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={root}",
            "--recursive-errors=no",
            "--man=no",
            str(root / "etc/systemd/system" / unit),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def exposure(root: Path, unit: str) -> tuple[float, str]:
    """`systemd-analyze security --offline=yes` of `unit` under `root`: (overall exposure, full output)."""
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", unit],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = out.stdout + out.stderr
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
    assert m, text
    return float(m.group(1)), text
