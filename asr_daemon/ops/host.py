"""What the host says about the daemon without asking the daemon: systemd unit states, the GPU
(nvidia-smi), the last request in the access log. Read-only, fail-soft, never wakes anything.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asr_daemon.engine import device

UNITS = (
    "asr-server.socket",
    "asr-server-proxy.service",
    "asr-server.service",
    "asr-idle-watcher.service",
    "asr-wyoming.socket",
    "asr-wyoming-proxy.service",
    "asr-backup.timer",
)
PROPS = "LoadState,ActiveState,SubState,StateChangeTimestamp"
TIME_KEYS = ("end", "start", "ts", "time", "timestamp")


def systemd_present() -> bool:
    """True when systemd is the init system and systemctl is installed."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def unit_state(name: str) -> dict[str, Any]:
    """`{"active": "active|inactive|failed|...", "sub": ..., "since": iso or None, "loaded": bool}`."""
    try:
        out = subprocess.run(
            ["systemctl", "show", "--timestamp=utc", "-p", PROPS, name],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
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
    rows = device.nvidia_smi_all("name,memory.used,memory.free,memory.total")
    found = []
    for parts in rows:
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            found.append(
                {
                    "name": parts[0],
                    "memory_used_mib": int(parts[1]),
                    "memory_free_mib": int(parts[2]),
                    "memory_total_mib": int(parts[3]),
                }
            )
    return found or None


def service_environment(unit: str) -> dict[str, str]:
    """The `Environment=` variables systemd gives `unit` (not those of its EnvironmentFile=)."""
    try:
        out = subprocess.run(
            ["systemctl", "show", "-p", "Environment", "--value", unit],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
        words = shlex.split(out)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    return dict(w.split("=", 1) for w in words if "=" in w)


def _tail(path: Path, block: int = 65536) -> list[str]:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - block))
        lines = f.read().splitlines()
    if size > block:
        lines = lines[1:]  # the first line is probably cut
    return [ln.decode("utf-8", "replace") for ln in lines if ln.strip()]


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


def _record_time(line: str) -> datetime | None:
    """When a request ended (or started); None for a probe or an unreadable line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("probe"):
        return None
    for key in TIME_KEYS:
        parsed = _parse_time(record.get(key))
        if parsed is not None:
            return parsed
    return None


def last_request(access_log: Path) -> datetime | None:
    """Time of the last request that counts as activity, from the JSON-lines access log: the newest
    non-probe line's `end` (or `start`), or the busy marker (`access.busy`, touched while requests
    are in flight) when it is newer. None when neither says anything."""
    found: datetime | None = None
    try:
        for line in reversed(_tail(access_log)):
            found = _record_time(line)
            if found is not None:
                break
    except OSError:
        pass
    try:
        busy = datetime.fromtimestamp(access_log.with_suffix(".busy").stat().st_mtime, UTC)
    except OSError:
        return found
    return busy if found is None or busy > found else found
