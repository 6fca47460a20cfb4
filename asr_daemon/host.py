"""What the host says about the daemon without asking the daemon: systemd unit states, the GPU
(nvidia-smi), the last request in the access log. Read-only, fail-soft, never wakes anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

UNITS = (
    "asr-server.socket",
    "asr-server-proxy.service",
    "asr-server.service",
    "asr-idle-watcher.service",
    "asr-backup.timer",
)
PROPS = "LoadState,ActiveState,SubState,StateChangeTimestamp"
TIME_KEYS = ("ts", "time", "timestamp", "@timestamp", "t")


def systemd_present() -> bool:
    """True when systemd is the init system and systemctl is installed."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def unit_state(name: str) -> dict[str, Any]:
    """`{"active": "active|inactive|failed|...", "sub": ..., "since": iso or None, "loaded": bool}`."""
    try:
        out = subprocess.run(
            ["systemctl", "show", "--timestamp=utc", "-p", PROPS, name],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {"loaded": False, "active": "unknown", "sub": None, "since": None}
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    since = None
    raw = props.get("StateChangeTimestamp", "")
    if raw:
        try:  # e.g. "Wed 2026-11-25 16:30:35 UTC"
            parsed = datetime.strptime(raw.split(" ", 1)[1], "%Y-%m-%d %H:%M:%S UTC")
            since = parsed.replace(tzinfo=UTC).isoformat()
        except (IndexError, ValueError):
            since = raw
    return {
        "loaded": props.get("LoadState") == "loaded",
        "active": props.get("ActiveState", "unknown"),
        "sub": props.get("SubState") or None,
        "since": since,
    }


def unit_active(name: str) -> bool:
    """True when systemd is present and reports the unit active (or reloading/activating)."""
    if not systemd_present():
        return False
    return unit_state(name)["active"] in {"active", "reloading", "activating", "deactivating"}


def gpus() -> list[dict[str, Any]] | None:
    """GPUs from nvidia-smi (name, memory used/free/total in MiB); None without nvidia-smi or a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.used,memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            found.append({"name": parts[0], "memory_used_mib": int(parts[1]),
                          "memory_free_mib": int(parts[2]), "memory_total_mib": int(parts[3])})
    return found or None


def _last_line(path: Path, block: int = 8192) -> str | None:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - block))
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    return lines[-1].decode("utf-8", "replace") if lines else None


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def last_request(access_log: Path) -> datetime | None:
    """Time of the last request: the last JSON line's time field, else the log's mtime; None when
    there is no log (no request since it was rotated or ever)."""
    try:
        line = _last_line(access_log)
        mtime = datetime.fromtimestamp(access_log.stat().st_mtime, UTC)
    except OSError:
        return None
    if line is None:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return mtime
    if isinstance(record, dict):
        for key in TIME_KEYS:
            parsed = _parse_time(record.get(key))
            if parsed is not None:
                return parsed
    return mtime
