"""`asrctl config show`: effective settings with secrets masked, and one line for a bad setting."""

from __future__ import annotations

import json

import pytest

from tests.integration.ops_support import asrctl, assert_one_error_line


def test_config_show_masks_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords in the database and Redis URLs never appear; the backup settings and paths do."""
    monkeypatch.setenv("ASR_DATABASE_URL", "postgresql://asr:hunter2-db@db.example/asr")
    monkeypatch.setenv("ASR_REDIS_URL", "redis://:hunter2-redis@127.0.0.1:6379/0")
    monkeypatch.setenv("ASR_STATE_DIR", "/var/lib/asr-server")
    result = asrctl("config", "show", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["settings"]["database_url"] == "postgresql://asr:***@db.example/asr"
    assert data["settings"]["backup_keep_daily"] == 7 and data["settings"]["backup_keep_weekly"] == 4
    assert data["derived"]["backups_dir"] == "/var/lib/asr-server/backups"
    human = asrctl("config", "show")
    for out in (result.stdout, human.stdout):
        assert "hunter2" not in out


def test_config_show_with_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid ASR_* value gives one error line naming the variable and exit status 2."""
    monkeypatch.setenv("ASR_BACKUP_KEEP_DAILY", "-1")
    result = asrctl("config", "show")
    assert_one_error_line(result, "ASR_BACKUP_KEEP_DAILY")
    assert result.exit_code == 2
