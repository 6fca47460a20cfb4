"""`asrctl jobs ls|show|retry|cancel|purge` against a real PostgreSQL (and Redis for the doorbell)."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import redis

from asr_daemon import queries
from asr_daemon.pipeline import queue
from tests import services
from tests.integration.ops_support import asrctl, assert_one_error_line, db

__all__ = ["db"]  # a fixture, imported for pytest


def add_job(
    pg: services.Postgres,
    url: str,
    status: str,
    *,
    days_old: float = 0,
    sha: str | None = None,
    audio_dir: Path | None = None,
    audio_deleted: bool = False,
) -> tuple[str, str]:
    """Insert a job finished (or created) `days_old` days ago; optionally write its audio file."""
    jid, sha = str(uuid.uuid4()), sha or uuid.uuid4().hex * 2
    ended = status in {"completed", "failed", "cancelled"}
    finished = f"now() - interval '{days_old} days'" if ended else "NULL"
    pg.psql(
        "INSERT INTO jobs (id, status, model, fingerprint, audio_sha256, audio_bytes, duration_s, created_at,"
        f" finished_at, audio_deleted_at, attempts, error_code) VALUES ('{jid}', '{status}', 'tiny.en', 'fp',"
        f" '{sha}', 4, 10, now() - interval '{days_old} days', {finished},"
        f" {'now()' if audio_deleted else 'NULL'}, {3 if status == 'failed' else 0},"
        f" {repr('E_AUDIO') if status == 'failed' else 'NULL'})",
        url.rsplit("/", 1)[1],
    )
    if audio_dir is not None:
        audio_dir.mkdir(parents=True, exist_ok=True)
        (audio_dir / sha).write_bytes(b"abcd")
    return jid, sha


def col(pg: services.Postgres, url: str, jid: str, column: str) -> str:
    """One column of one job, as psql prints it."""
    return pg.psql(f"SELECT {column} FROM jobs WHERE id = '{jid}'", url.rsplit("/", 1)[1])


def test_ls_filters_and_orders(pg: services.Postgres, db: str) -> None:
    """`jobs ls` lists newest first, honours --status and --limit, and rejects an unknown status."""
    old, _ = add_job(pg, db, "completed", days_old=2)
    new, _ = add_job(pg, db, "queued")
    failed, _ = add_job(pg, db, "failed", days_old=1)
    rows = json.loads(asrctl("jobs", "ls", "--json").stdout)
    assert [r["id"] for r in rows] == [new, failed, old]
    only_failed = json.loads(asrctl("jobs", "ls", "--status", "failed", "--json").stdout)
    assert [r["id"] for r in only_failed] == [failed]
    assert len(json.loads(asrctl("jobs", "ls", "--limit", "1", "--json").stdout)) == 1
    human = asrctl("jobs", "ls")
    assert human.exit_code == 0 and new[:8] in human.stdout
    assert_one_error_line(asrctl("jobs", "ls", "--status", "done"), "--status must be one of")


def test_show_accepts_a_prefix(pg: services.Postgres, db: str) -> None:
    """`jobs show` finds a job by a unique id prefix and refuses an unknown or malformed id."""
    jid, sha = add_job(pg, db, "completed")
    shown = json.loads(asrctl("jobs", "show", jid[:8], "--json").stdout)
    assert shown["id"] == jid and shown["audio_sha256"] == sha and shown["segments"] == 0
    assert_one_error_line(asrctl("jobs", "show", str(uuid.uuid4())), "no job")
    assert_one_error_line(asrctl("jobs", "show", "zz"), "is not a job id")


def test_show_prints_options_and_timings_as_tables_and_times_to_the_millisecond(pg: services.Postgres, db: str) -> None:
    """`jobs show` prints options and timings as readable rows (not a Python dict), `--json` gives
    them as JSON objects, and times are rounded to the millisecond in both."""
    jid, _ = add_job(pg, db, "completed")
    pg.psql(
        'UPDATE jobs SET duration_s = 59.952000000001384, options = \'{"language": "en", "beam_size": 5}\','
        f" timings = '{{\"transcribe_s\": 1.23456789, \"windows\": 1}}' WHERE id = '{jid}'",
        db.rsplit("/", 1)[1],
    )
    shown = json.loads(asrctl("jobs", "show", jid, "--json").stdout)
    assert shown["duration_s"] == 59.952 and shown["timings"] == {"transcribe_s": 1.235, "windows": 1}
    assert shown["options"] == {"language": "en", "beam_size": 5}
    human = asrctl("jobs", "show", jid)
    assert human.exit_code == 0, human.stderr
    assert "{" not in human.stdout and "'" not in human.stdout, human.stdout
    lines = {ln.split()[0]: ln.split()[1:] for ln in human.stdout.splitlines() if ln.split()}
    assert lines["duration_s"] == ["59.952"] and lines["beam_size"] == ["5"] and lines["transcribe_s"] == ["1.235"]


def test_retry_requeues_and_rings_the_doorbell(
    pg: services.Postgres,
    db: str,
    redis_server: services.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """retry moves a failed job to queued with fresh attempts and rings the worker's doorbell."""
    monkeypatch.setenv("ASR_REDIS_URL", redis_server.url)
    jid, _ = add_job(pg, db, "failed", audio_dir=tmp_path / "state" / "uploads")
    result = asrctl("jobs", "retry", jid)
    assert result.exit_code == 0, result.stderr
    assert col(pg, db, jid, "status || ' ' || attempts || ' ' || coalesce(error_code, '-')") == "queued 0 -"
    bell = redis.Redis.from_url(redis_server.url).pubsub(ignore_subscribe_messages=True)
    bell.subscribe(queue.DOORBELL)
    bell.get_message(timeout=1)  # the subscription's confirmation
    again, _ = add_job(pg, db, "failed", audio_dir=tmp_path / "state" / "uploads")
    assert asrctl("jobs", "retry", again).exit_code == 0
    msg = bell.get_message(timeout=5)
    assert msg is not None and msg["data"] == queue.EXTERNAL.encode()
    bell.close()


def test_retry_without_redis_still_requeues(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """Redis down: the job is still queued (the doorbell is fail-soft) and the output says so."""
    jid, _ = add_job(pg, db, "cancelled", audio_dir=tmp_path / "state" / "uploads")
    result = asrctl("jobs", "retry", jid)
    assert result.exit_code == 0 and "Redis unreachable" in result.stdout
    assert col(pg, db, jid, "status") == "queued"


def test_retry_refuses_other_states_and_lost_audio(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """retry refuses a completed job, a job whose audio retention deleted, and a missing audio file."""
    uploads = tmp_path / "state" / "uploads"
    done, _ = add_job(pg, db, "completed", audio_dir=uploads)
    assert_one_error_line(asrctl("jobs", "retry", done), "is completed")
    assert col(pg, db, done, "status") == "completed"
    purged, _ = add_job(pg, db, "failed", audio_deleted=True)
    assert_one_error_line(asrctl("jobs", "retry", purged), "deleted by retention")
    lost, _ = add_job(pg, db, "failed")
    assert_one_error_line(asrctl("jobs", "retry", lost), "audio file is missing")
    assert col(pg, db, lost, "status") == "failed"


def test_cancel_queued_running_and_finished(pg: services.Postgres, db: str) -> None:
    """cancel: queued becomes cancelled at once, running gets cancel_requested, finished is refused."""
    queued, _ = add_job(pg, db, "queued")
    running, _ = add_job(pg, db, "running")
    done, _ = add_job(pg, db, "completed")
    assert asrctl("jobs", "cancel", queued).exit_code == 0
    assert col(pg, db, queued, "status || ' ' || (finished_at IS NOT NULL)") == "cancelled true"
    assert "cancellation requested" in asrctl("jobs", "cancel", running).stdout
    assert col(pg, db, running, "status || ' ' || cancel_requested") == "running true"
    assert_one_error_line(asrctl("jobs", "cancel", done), "nothing to cancel")


def test_purge_deletes_old_jobs_and_orphaned_audio(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """purge deletes old finished jobs with their segments and unshared audio; --dry-run changes nothing."""
    # recent, queued and running jobs and audio another job still needs stay
    up = tmp_path / "state" / "uploads"
    old, old_sha = add_job(pg, db, "completed", days_old=40, audio_dir=up)
    pg.psql(
        f"INSERT INTO segments (job_id, seq, start_s, end_s, text) VALUES ('{old}', 0, 0, 1, 'x')", db.rsplit("/", 1)[1]
    )
    shared_old, shared = add_job(pg, db, "failed", days_old=40, audio_dir=up)
    shared_new, _ = add_job(pg, db, "completed", days_old=1, sha=shared)
    stuck, stuck_sha = add_job(pg, db, "queued", days_old=40, audio_dir=up)
    dry = json.loads(asrctl("jobs", "purge", "--older-than", "30d", "--dry-run", "--json").stdout)
    assert dry == {"dry_run": True, "jobs": 2, "audio_only": False, "files_removed": 1, "bytes_freed": 4}
    assert (up / old_sha).exists() and col(pg, db, old, "status") == "completed"
    result = asrctl("jobs", "purge", "--older-than", "30d")
    assert result.exit_code == 0 and "2 jobs deleted, 1 audio file(s) removed" in result.stdout
    left = pg.psql("SELECT id FROM jobs ORDER BY id", db.rsplit("/", 1)[1]).split()
    assert sorted(left) == sorted([shared_new, stuck])
    assert pg.psql("SELECT count(*) FROM segments", db.rsplit("/", 1)[1]) == "0"
    assert sorted(p.name for p in up.iterdir()) == sorted([shared, stuck_sha])
    assert shared_old not in left


def test_purge_keeps_audio_an_upload_is_reusing(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """A purge that finds a file orphaned while an upload of the same audio (in the daemon) is committing
    its job waits for that commit and keeps the file: the new job's audio is not deleted under it."""
    up = tmp_path / "state" / "uploads"
    _, sha = add_job(pg, db, "completed", days_old=40, audio_dir=up)
    # the daemon's intake, mid-submission: audio lock held, the new job inserted but not yet committed
    upload = subprocess.Popen(
        ["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", pg.url(db.rsplit("/", 1)[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upload.stdin is not None and upload.stdout is not None
    new = str(uuid.uuid4())
    upload.stdin.write(
        f"BEGIN; SELECT pg_advisory_xact_lock({queries.AUDIO_LOCK_SPACE}, hashtext('{sha}'));"
        "INSERT INTO jobs (id, status, model, fingerprint, audio_sha256, audio_bytes, duration_s)"
        f" VALUES ('{new}', 'queued', 'tiny.en', 'fp2', '{sha}', 4, 10); SELECT 'held';\n"
    )
    upload.stdin.flush()
    assert [upload.stdout.readline().strip() for _ in range(2)] == ["", "held"]  # the lock's void, then ours
    results: list[object] = []
    purge = threading.Thread(target=lambda: results.append(asrctl("jobs", "purge", "--older-than", "30d")))
    purge.start()
    purge.join(2)
    assert purge.is_alive(), f"the purge did not wait for the upload's lock: {results}"
    assert (up / sha).exists()
    upload.stdin.write("COMMIT;\n")
    upload.stdin.close()
    assert upload.wait(10) == 0
    purge.join(30)
    assert not purge.is_alive()
    assert "1 jobs deleted, 0 audio file(s) removed" in results[0].stdout  # type: ignore[attr-defined]
    assert (up / sha).exists() and col(pg, db, new, "status") == "queued"


def test_purge_audio_only_keeps_transcripts(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """--audio-only removes old audio files and sets audio_deleted_at; rows and segments stay."""
    up = tmp_path / "state" / "uploads"
    old, _ = add_job(pg, db, "completed", days_old=10, audio_dir=up)
    pg.psql(
        f"INSERT INTO segments (job_id, seq, start_s, end_s, text) VALUES ('{old}', 0, 0, 1, 'x')", db.rsplit("/", 1)[1]
    )
    recent, recent_sha = add_job(pg, db, "completed", days_old=1, audio_dir=up)
    result = asrctl("jobs", "purge", "--older-than", "1w", "--audio-only")
    assert result.exit_code == 0, result.stderr
    assert col(pg, db, old, "audio_deleted_at IS NOT NULL") == "t"
    assert col(pg, db, recent, "audio_deleted_at IS NULL") == "t"
    assert [p.name for p in up.iterdir()] == [recent_sha]
    assert pg.psql("SELECT count(*) FROM segments", db.rsplit("/", 1)[1]) == "1"
    assert_one_error_line(asrctl("jobs", "purge", "--older-than", "soon"), "not an age")


def test_jobs_with_database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL unreachable: every jobs command prints one error line, exits non-zero, no password."""
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql://asr:pw-s3cret@127.0.0.1:{services.free_port()}/asr")
    for args in (
        ["ls"],
        ["show", "abcd1234"],
        ["retry", "abcd1234"],
        ["cancel", "abcd1234"],
        ["purge", "--older-than", "30d"],
    ):
        result = asrctl("jobs", *args)
        assert_one_error_line(result, "PostgreSQL")
        assert "pw-s3cret" not in result.stderr


@pytest.mark.parametrize("age", ["1000000d", "99999999999999d", "9999999999w"])
def test_purge_with_an_age_beyond_the_calendar_fails_in_one_line(pg: services.Postgres, db: str, age: str) -> None:
    """`purge --older-than` further back than dates go: one error line, exit 2, nothing deleted."""
    old, _ = add_job(pg, db, "completed", days_old=400)
    result = asrctl("jobs", "purge", "--older-than", age)
    assert_one_error_line(result, f"--older-than: {age!r} is longer ago than dates go")
    assert result.exit_code == 2 and col(pg, db, old, "status") == "completed"
