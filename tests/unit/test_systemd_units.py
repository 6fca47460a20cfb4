"""The unit files in systemd/: they load cleanly and stay sandboxed.

Real tools, no PID-1 systemd needed: `systemd-analyze verify` and `systemd-analyze security
--offline=yes`, both against a throwaway root holding the units and a stand-in `asrctl`
(ExecStart= must point at an executable).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests import units

UNITS_DIR = Path(__file__).resolve().parents[2] / "systemd"
SERVICES = {
    # unit: highest `systemd-analyze security` exposure allowed (0 = safest, 10 = unprotected)
    "asr-server.service": 2.0,  # the GPU costs PrivateDevices=, the API and webhooks cost the network
    "asr-server-proxy.service": 0.6,
    "asr-idle-watcher.service": 1.5,
    "asr-wyoming-proxy.service": 0.6,
}
ALL_UNITS = ["asr-server.socket", "asr-wyoming.socket", *SERVICES]
PINS = ("asr-server.service", "asr-server-proxy.service", "asr-wyoming-proxy.service", "asr-idle-watcher.service")
PROXYD = Path("/usr/lib/systemd/systemd-socket-proxyd")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root directory with the units in /etc/systemd/system and an executable asrctl stand-in."""
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in ALL_UNITS:
        shutil.copy(UNITS_DIR / unit, units / unit)
    asrctl = tmp_path / "opt/asr-server/venv/bin/asrctl"
    asrctl.parent.mkdir(parents=True)
    asrctl.write_text("#!/bin/sh\nexit 0\n")
    asrctl.chmod(0o755)
    proxyd = tmp_path / PROXYD.relative_to("/")
    proxyd.parent.mkdir(parents=True)
    if PROXYD.exists():  # the real binary: verify also checks it is there on this host
        shutil.copy(PROXYD, proxyd)
    return tmp_path


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_unit_verifies(root: Path, unit: str) -> None:
    """`systemd-analyze verify` accepts the unit: no unknown directive, bad value or missing binary."""
    out = units.verify(root, unit)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


@pytest.mark.parametrize(("unit", "limit"), SERVICES.items())
def test_unit_exposure_under_threshold(root: Path, unit: str, limit: float) -> None:
    """The sandbox does not regress: offline exposure stays at or below the unit's threshold."""
    level, report = units.exposure(root, unit)
    assert level <= limit, report


def test_daemon_unit_lifecycle_settings() -> None:
    """The daemon unit keeps the lifecycle contract: notify from the worker, watchdog, backstop, restart."""
    text = (UNITS_DIR / "asr-server.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=all",
        "RuntimeMaxSec=12h",
        "Restart=on-failure",
        "DevicePolicy=closed",
        "RuntimeDirectory=asr-server",
        "User=asr",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    proxy = (UNITS_DIR / "asr-server-proxy.service").read_text()
    assert re.search(r"^BindsTo=asr-server.service$", proxy, re.MULTILINE)
    assert "/run/asr-server/http.sock" in proxy and "/run/asr-server/http.sock" in text
    wyoming = (UNITS_DIR / "asr-wyoming-proxy.service").read_text()
    assert re.search(r"^BindsTo=asr-server.service$", wyoming, re.MULTILINE)
    assert "/run/asr-server/wyoming.sock" in wyoming and "ASR_WYOMING_UDS=/run/asr-server/wyoming.sock" in text
    socket = (UNITS_DIR / "asr-wyoming.socket").read_text()
    assert "ListenStream=127.0.0.1:10300" in socket and "Service=asr-wyoming-proxy.service" in socket


def test_idle_stop_is_decided_by_systemd() -> None:
    """The daemon stops only when nothing needs it: the watcher and the proxy pin it, the proxy upholds
    the watcher, and a manual start pulls the watcher in (so it stays up until quiet)."""

    def directives(name: str) -> set[str]:
        text = (UNITS_DIR / name).read_text()
        return {line for line in text.splitlines() if line and not line.startswith(("#", "["))}

    server = directives("asr-server.service")
    proxy = directives("asr-server-proxy.service")
    wyoming = directives("asr-wyoming-proxy.service")
    watcher = directives("asr-idle-watcher.service")
    assert {"StopWhenUnneeded=yes", "Wants=asr-idle-watcher.service"} <= server
    assert {"BindsTo=asr-server.service", "Upholds=asr-idle-watcher.service"} <= proxy
    assert {"BindsTo=asr-server.service", "After=asr-server.service", "Upholds=asr-idle-watcher.service"} <= wyoming
    assert {"BindsTo=asr-server.service", "After=asr-server.service", "Restart=on-failure"} <= watcher
    # the only units that may pin the daemon: no other unit names it as a dependency
    pinning = re.compile(r"^(Wants|Requires|BindsTo|Upholds)=.*asr-server\.service", re.MULTILINE)
    for unit in UNITS_DIR.glob("*.service"):
        if unit.name not in PINS:
            assert not pinning.search(unit.read_text()), unit
