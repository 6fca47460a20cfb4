"""`asrctl` run as an operator runs it: a bad argument exits 2 (docs/operations.md), in one error line."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import services


def asrctl(database: str, *args: str, state: Path) -> subprocess.CompletedProcess[str]:
    """Run `asrctl ARGS` in a subprocess against `database`, state in `state`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    env.update(ASR_DATABASE_URL=database, ASR_STATE_DIR=str(state), ASR_REDIS_URL="redis://127.0.0.1:1/0")
    return subprocess.run(
        [sys.executable, "-m", "asr_daemon.cli", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(out: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exactly one `asrctl: error:` line on stderr, holding `fragment`."""
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("asrctl: error: ") and fragment in lines[0], out.stderr


def test_a_job_reference_that_is_not_an_id_exits_2(database: str, tmp_path: Path) -> None:
    """`jobs show|retry|cancel zzz`: not an id, a bad argument (exit 2); an id of no job stays exit 1."""
    for command in ("show", "retry", "cancel"):
        out = asrctl(database, "jobs", command, "zzz", state=tmp_path)
        assert out.returncode == 2, (command, out.stderr)
        one_error_line(out, "'zzz' is not a job id")
    missing = asrctl(database, "jobs", "show", str(uuid.uuid4()), state=tmp_path)
    assert missing.returncode == 1, missing.stderr
    one_error_line(missing, "no job")


def test_an_ambiguous_job_prefix_exits_2(pg: services.Postgres, database: str, tmp_path: Path) -> None:
    """A prefix two jobs share names no job: exit 2, and it says the prefix is ambiguous."""
    ids = ["abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002"]
    for jid in ids:
        pg.psql(
            "INSERT INTO jobs (id, status, model, fingerprint, audio_sha256, audio_bytes, duration_s)"
            f" VALUES ('{jid}', 'queued', 'tiny.en', 'fp', '{uuid.uuid4().hex * 2}', 4, 1)",
            database.rsplit("/", 1)[1],
        )
    out = asrctl(database, "jobs", "show", "abcd", state=tmp_path)
    assert out.returncode == 2, out.stderr
    one_error_line(out, "ambiguous")


@pytest.mark.parametrize(
    ("into", "fragment"),
    [("bad name; drop", "use letters, digits and _"), ("postgres", "maintenance database")],
)
def test_restore_into_a_bad_name_exits_2_and_touches_nothing(
    pg: services.Postgres, database: str, tmp_path: Path, into: str, fragment: str
) -> None:
    """`restore --into 'bad name; drop'` or `--into postgres`: exit 2 before any file or database is
    touched (the dump need not even exist), and no database is created."""
    before = pg.psql("SELECT count(*) FROM pg_database")
    out = asrctl(database, "restore", str(tmp_path / "missing.dump"), "--into", into, state=tmp_path)
    assert out.returncode == 2, out.stderr
    one_error_line(out, fragment)
    assert pg.psql("SELECT count(*) FROM pg_database") == before


@pytest.mark.parametrize("args", [("rm", "../../etc"), ("verify", "../x", "--no-load"), ("rm", ".hidden")])
def test_an_invalid_model_name_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """`models rm|verify` with a name that cannot be a model (a path, a hidden name): exit 2, one line."""
    out = asrctl("postgresql:///unused", "models", *args, state=tmp_path)
    assert out.returncode == 2, out.stderr
    one_error_line(out, "invalid model name")
