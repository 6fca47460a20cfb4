"""The nightly backup schedule files: scripts/asr-backup.cron and systemd/asr-backup.{service,timer}.

The cron file is parsed the way cron reads /etc/cron.d (five time fields, a user, a command); the
units go through `systemd-analyze verify` against a throwaway root with stand-ins for the binaries.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests import units

ROOT = Path(__file__).resolve().parents[2]
CRON = ROOT / "scripts" / "asr-backup.cron"
UNITS = ["asr-backup.service", "asr-backup.timer", "asr-backup-failed.service"]
RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def cron_jobs() -> list[tuple[list[str], str, str]]:
    """(time fields, user, command) of every job line; environment and comment lines skipped."""
    jobs = []
    for line in CRON.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        parts = line.split(None, 6)
        assert len(parts) == 7, f"not `m h dom mon dow user command`: {line!r}"
        jobs.append((parts[:5], parts[5], parts[6]))
    return jobs


def field_ok(field: str, lo: int, hi: int) -> bool:
    """A cron time field: *, N, N-M, lists of those, each with an optional /step, within lo..hi."""
    for item in field.split(","):
        base, _, step = item.partition("/")
        if step and not step.isdigit():
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if not all(b.isdigit() for b in bounds) or len(bounds) > 2:
            return False
        if not all(lo <= int(b) <= hi for b in bounds):
            return False
    return True


def unit_execs(unit: str) -> list[str]:
    """The binaries a unit's ExecStart= lines run."""
    text = (ROOT / "systemd" / unit).read_text()
    return [shlex.split(m)[0].lstrip("-@:+!") for m in re.findall(r"^ExecStart=(.+)$", text, re.MULTILINE)]


def test_cron_file_parses_as_cron_d() -> None:
    """One nightly job, valid time fields, backup run as `asr`, absolute paths, no `%`, ends with a newline."""
    text = CRON.read_text()
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    assert "/etc/cron.d/asr-backup " in text, "must say where it goes: cron.d skips names with dots"
    jobs = cron_jobs()
    assert len(jobs) == 1
    fields, user, command = jobs[0]
    assert all(field_ok(f, lo, hi) for f, (lo, hi) in zip(fields, RANGES, strict=True)), fields
    assert fields[2:] == ["*", "*", "*"], "nightly: every day of every month"
    assert user == "root"  # to read the 0600 env file; the backup itself runs as asr (below)
    assert "%" not in command, "cron turns % into a newline"
    assert command.startswith("/bin/sh -c '"), "absolute path to the shell"
    assert command.rstrip().endswith(">>/var/log/asr-server/backup.log 2>&1"), "output goes to a log"
    inner = command.split("'")[1]
    assert re.search(r"exec runuser -u asr -- (/\S+/asrctl) backup\b", inner), inner
    assert "/etc/asr-server/asr-server.env" in inner
    assert re.search(r"^SHELL=/bin/sh$", text, re.MULTILINE) and re.search(r"^PATH=/", text, re.MULTILINE)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root and runuser")
def test_cron_command_reads_the_root_only_env_file_and_backs_up_as_asr() -> None:
    """Run the cron job's own command: settings from a root-only 0600 env file reach asrctl, which
    runs as the unprivileged user (a stand-in asrctl and `nobody` play the venv and `asr`)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # pytest's tmp_path is 0700 root: nobody can't enter
        _run_cron_command(Path(d))


def _run_cron_command(tmp_path: Path) -> None:
    env_file = tmp_path / "asr-server.env"
    env_file.write_text("ASR_BACKUP_KEEP_DAILY=3\nASR_DATABASE_URL=postgresql://asr:s3cret@db/asr\n")
    env_file.chmod(0o600)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    tmp_path.chmod(0o755)
    out = tmp_path / "out"
    stand_in = tmp_path / "asrctl"
    stand_in.write_text(f'#!/bin/sh\n{{ id -un; pwd; echo "$*"; env | grep ^ASR_ | sort; }} > "{out}" 2>&1\n')
    stand_in.chmod(0o755)
    out.touch()
    out.chmod(0o666)
    nobody = pwd.getpwnam("nobody").pw_name
    command = cron_jobs()[0][2].split(" >>", 1)[0]
    for real, test in (
        ("/etc/asr-server/asr-server.env", str(env_file)),
        ("/opt/asr-server/venv/bin/asrctl", str(stand_in)),
        ("cd /var/lib/asr-server", f"cd {state}"),
        ("runuser -u asr", f"runuser -u {nobody}"),
    ):
        assert real in command
        command = command.replace(real, test)
    subprocess.run(shlex.split(command), check=True, timeout=30, cwd="/")
    user, cwd, args, *env = out.read_text().splitlines()
    assert (user, cwd, args) == (nobody, str(state), "backup")
    assert "ASR_BACKUP_KEEP_DAILY=3" in env and "ASR_DATABASE_URL=postgresql://asr:s3cret@db/asr" in env
    assert "ASR_STATE_DIR=/var/lib/asr-server" in env
    # and the point of starting as root: the unprivileged user could not have read the file itself
    denied = subprocess.run(["runuser", "-u", nobody, "--", "cat", str(env_file)], capture_output=True, check=False)
    assert denied.returncode != 0


def test_cron_and_units_run_the_same_asrctl() -> None:
    """The cron job, the backup service and the daemon's own unit all name the same asrctl."""
    cron_cmd = cron_jobs()[0][2]
    found = re.search(r"exec runuser -u asr -- (/\S+/asrctl) backup", cron_cmd)
    assert found
    asrctl = found.group(1)
    assert unit_execs("asr-backup.service") == [asrctl]
    server = ROOT / "systemd" / "asr-server.service"
    if server.exists():  # installed by the systemd work; the paths must agree
        assert unit_execs("asr-server.service")[0] == asrctl


def test_timer_settings() -> None:
    """A nightly, catching-up, spread timer enabled by timers.target, running a oneshot as asr that reports failure."""
    # failures are reported through asr-backup-failed.service
    timer = (ROOT / "systemd" / "asr-backup.timer").read_text()
    for directive in ("OnCalendar=*-*-* 03:15:00", "Persistent=true", "WantedBy=timers.target"):
        assert directive in timer
    assert re.search(r"^RandomizedDelaySec=\d+min$", timer, re.MULTILINE)
    service = (ROOT / "systemd" / "asr-backup.service").read_text()
    for directive in ("Type=oneshot", "User=asr", "OnFailure=asr-backup-failed.service", "UMask=0077"):
        assert directive in service
    assert "<2>" in (ROOT / "systemd" / "asr-backup-failed.service").read_text(), "logged at priority crit"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with the backup units in /etc/systemd/system and stand-ins for every ExecStart binary."""
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(ROOT / "systemd" / unit, units / unit)
        for exe in unit_execs(unit):
            stand_in = tmp_path / exe.lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\nexit 0\n")
            stand_in.chmod(0o755)
    return tmp_path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(root: Path, unit: str) -> None:
    """`systemd-analyze verify` accepts the unit: no unknown directive, bad value or missing binary."""
    out = units.verify(root, unit)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_backup_service_stays_sandboxed(root: Path) -> None:
    """The backup service's offline exposure stays low (it only reads state and talks to PostgreSQL)."""
    level, report = units.exposure(root, "asr-backup.service")
    assert level <= 2.0, report
