"""Fixtures and helpers shared by the operator-CLI tests (backup, restore, jobs, status).

Imported by those test modules (not a conftest, so it cannot clash with the suite's own fixtures).
Each test gets a fresh migrated database from the suite's session PostgreSQL (`tests/conftest.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from asr_daemon.cli import app
from tests import services

#: A real daemon's /readyz on a GPU host (tests/e2e/test_cli_client.py checks these keys against
#: the real daemon's answer, so the stub cannot drift from the schema).
READYZ: dict[str, Any] = {
    "status": "ready",
    "checks": {"database": "ok", "redis": "ok", "model": "ok"},
    "device": {
        "kind": "cuda",
        "compute_type": "float16",
        "gpu": {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559,
            "memory_free_mib": 79871,
            "memory_used_mib": 1688,
        },
        "cpu_fallback": False,
    },
}
#: One loaded model as a real daemon's /v1/models lists it (keys checked the same way).
MODEL: dict[str, Any] = {
    "id": "tiny.en",
    "object": "model",
    "created": 1_764_000_000,
    "owned_by": "Systran",
    "repository": "Systran/faster-whisper-tiny.en",
    "local": True,
    "size_bytes": 77_691_011,
    "default": True,
    "loading": False,
    "loaded": True,
    "device": "cuda",
    "compute_type": "float16",
    "in_use": 0,
    "memory_bytes": 96 << 20,
    "memory_budget_bytes": 108_919_000,
}


@pytest.fixture
def db(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh migrated database (the suite's `database`); ASR_DATABASE_URL and ASR_STATE_DIR point
    at it and at tmp_path, ASR_REDIS_URL at nothing."""
    for key in [k for k in os.environ if k.startswith("ASR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ASR_DATABASE_URL", database)
    monkeypatch.setenv("ASR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ASR_REDIS_URL", f"redis://127.0.0.1:{services.free_port()}/0")
    return database


def asrctl(*args: str) -> Result:
    """Run `asrctl ARGS` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def assert_one_error_line(result: Result, fragment: str = "") -> None:
    """The command failed with a non-zero exit and exactly one `asrctl: error:` line on stderr."""
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("asrctl: error: "), lines[0]
    assert fragment in lines[0], lines[0]


def seed(pg: services.Postgres, dbname: str, *, jobs: int = 3, audio_dir: Path | None = None) -> list[str]:
    """Insert `jobs` completed jobs with two segments and one webhook delivery each; returns ids.
    With `audio_dir`, also write each job's audio file there (named by its sha256)."""
    ids = []
    for i in range(jobs):
        jid = str(uuid.uuid4())
        sha = uuid.uuid4().hex * 2
        ids.append(jid)
        pg.psql(
            "INSERT INTO jobs (id, status, model, fingerprint, audio_sha256, audio_bytes, duration_s,"
            " filename, options, finished_at) VALUES"
            f" ('{jid}', 'completed', 'tiny.en', 'fp{i}', '{sha}', 5, 1.5, 'f{i}.wav',"
            f" '{json.dumps({'language': 'en', 'n': i})}', now())",
            dbname,
        )
        pg.psql(
            f"INSERT INTO segments (job_id, seq, start_s, end_s, text, tokens, words) VALUES"
            f" ('{jid}', 0, 0, 1, 'hello {i}', ARRAY[1,2], '[{{\"w\": \"hello\"}}]'),"
            f" ('{jid}', 1, 1, 1.5, 'wörld {i} ''quoted''', NULL, NULL)",
            dbname,
        )
        pg.psql(f"INSERT INTO webhook_deliveries (job_id, attempt, status_code) VALUES ('{jid}', 1, 200)", dbname)
        if audio_dir is not None:
            audio_dir.mkdir(parents=True, exist_ok=True)
            (audio_dir / sha).write_bytes(b"RIFF" + bytes([i]))
    return ids


def ensure_api_keys(pg: services.Postgres, dbname: str) -> bool:
    """Keys to carry through a backup: when migration 0002 has not made `api_keys` yet, a stand-in
    table with two rows (a sequence-backed id) and True; the real table is left as is (False)."""
    if pg.psql("SELECT to_regclass('public.api_keys') IS NULL", dbname) != "t":
        return False
    pg.psql("CREATE TABLE api_keys (id bigserial PRIMARY KEY, name text NOT NULL, hash text NOT NULL)", dbname)
    pg.psql("INSERT INTO api_keys (name, hash) VALUES ('ops', 'h1'), ('ci', 'h2')", dbname)
    return True


def snapshot(pg: services.Postgres, dbname: str) -> dict[str, str]:
    """Every row of every table in the public schema, as text, in a stable order."""
    tables = pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename", dbname).split()
    return {
        t: pg.psql(f"SELECT string_agg(r::text, E'\\n' ORDER BY r::text) FROM public.{t} r", dbname) for t in tables
    }


ASRCTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "asrctl"
#: the settings `unprivileged` passes on to asrctl
KEEP = {"ASR_DATABASE_URL", "ASR_STATE_DIR", "ASR_REDIS_URL", "ASR_BACKUP_DIR", "ASR_DEVICE"}
#: tests that need file permissions to apply (as root: setpriv drops the capabilities that bypass them)
needs_permissions = pytest.mark.skipif(
    os.geteuid() == 0 and not shutil.which("setpriv"), reason="as root, needs setpriv to make permissions apply"
)


def unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """`asrctl ARGS` in a subprocess that file permissions apply to: as root, without the
    capabilities that bypass them (setpriv drops DAC override/read-search from the bounding set)."""
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_") or k in KEEP}
    argv = [*prefix, str(ASRCTL), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def assert_one_error_line_of(r: subprocess.CompletedProcess[str], fragment: str) -> None:
    """As `assert_one_error_line`, for a subprocess."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert lines[0].startswith("asrctl: error: ") and fragment in lines[0], lines[0]
