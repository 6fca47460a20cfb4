"""`ASR_REDIS_URL` that redis-py cannot use: one error line from every command, never a job changed
and then a traceback; the daemon's default and every form redis-py reads still start."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from asr_daemon.cli import jobs
from asr_daemon.config import Settings
from tests import services
from tests.integration.ops_support import asrctl, assert_one_error_line, db
from tests.integration.test_cli_jobs import add_job, col

__all__ = ["db"]  # a fixture, imported for pytest

BAD = ["", "localhost:6379", "redis://:hunter2@127.0.0.1:port/0", "http://127.0.0.1:6379", "redis://h/x", "unix://"]


@pytest.mark.parametrize("url", BAD)
def test_jobs_cancel_and_retry_refuse_an_unusable_redis_url_before_changing_the_job(
    pg: services.Postgres, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A malformed or empty ASR_REDIS_URL: cancel and retry exit 2 with `invalid ASR_REDIS_URL`, no
    traceback, no password, and the job is left as it was."""
    queued, _ = add_job(pg, db, "queued")
    failed, _ = add_job(pg, db, "failed", audio_dir=tmp_path / "state" / "uploads")
    monkeypatch.setenv("ASR_REDIS_URL", url)
    for args, jid, status in ((("jobs", "cancel"), queued, "queued"), (("jobs", "retry"), failed, "failed")):
        result = asrctl(*args, jid)
        assert_one_error_line(result, "invalid ASR_REDIS_URL: ")
        assert result.exit_code == 2 and "hunter2" not in result.stderr
        assert col(pg, db, jid, "status") == status


@pytest.mark.parametrize("url", ["", "localhost:6379"])
def test_doctor_reports_an_unusable_redis_url_in_one_line(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """`asrctl doctor` with a malformed or empty ASR_REDIS_URL: one error line, exit 2, no traceback."""
    monkeypatch.setenv("ASR_REDIS_URL", url)
    result = asrctl("doctor")
    assert_one_error_line(result, "invalid ASR_REDIS_URL: ")
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "redis://", "rediss://:pw@cache.lan:6380/2", "unix:///run/redis/redis.sock?db=1",
     "redis://[::1]:6379/0"],
)  # fmt: skip
def test_every_form_redis_reads_is_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """The default (the daemon starts with it unset) and the URL forms redis-py reads are valid settings."""
    monkeypatch.delenv("ASR_REDIS_URL", raising=False)
    assert Settings().redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("ASR_REDIS_URL", url)
    assert Settings().redis_url.get_secret_value() == url


def test_wake_treats_an_unusable_url_like_an_unreachable_redis() -> None:
    """The CLI's doorbell returns False (no exception) for a URL redis-py refuses: the job change stands."""
    assert asyncio.run(jobs.wake("localhost:6379", uuid.uuid4())) is False


def test_cancel_with_redis_unreachable_says_so(pg: services.Postgres, db: str) -> None:
    """Cancel with Redis down still cancels and says the worker notices at its next poll."""
    queued, _ = add_job(pg, db, "queued")
    result = asrctl("jobs", "cancel", queued)
    assert result.exit_code == 0 and "Redis unreachable" in result.stdout, result.stdout + result.stderr
    assert col(pg, db, queued, "status") == "cancelled"
