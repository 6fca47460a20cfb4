"""Helpers for checking systemd unit files with the real `systemd-analyze`."""

from __future__ import annotations

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
