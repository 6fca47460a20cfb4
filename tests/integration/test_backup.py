"""`asrctl backup`, `backup ls` and `restore` against a real PostgreSQL server."""

from __future__ import annotations

import glob
import json
import shutil
import stat
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from asr_daemon.ops import backup as bk
from asr_daemon.ops import host, migrate
from tests import services
from tests.integration.ops_support import (
    asrctl,
    assert_one_error_line,
    db,
    ensure_api_keys,
    seed,
    snapshot,
)

__all__ = ["db"]  # a fixture, imported for pytest


def _dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _backup(tmp_path: Path, *extra: str) -> Path:
    result = asrctl("backup", "--dir", str(tmp_path / "b"), "--json", *extra)
    assert result.exit_code == 0, result.output + result.stderr
    return Path(json.loads(result.stdout)["file"])


def _bad_bindir(tmp_path: Path, pg: services.Postgres, damage: str) -> Path:
    """A bin directory whose pg_dump writes a damaged dump (the real pg_restore beside it)."""
    bindir = tmp_path / "badbin"
    bindir.mkdir()
    (bindir / "pg_restore").symlink_to(pg.bindir / "pg_restore")
    fix = {
        "truncate": 'truncate -s $(( $(stat -c %s "$out") * 2 / 3 )) "$out"',
        "flip": 'printf "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff" | dd of="$out" bs=1 '
        'seek=$(( $(stat -c %s "$out") - 200 )) conv=notrunc status=none',
    }[damage]
    script = bindir / "pg_dump"
    script.write_text(
        "#!/bin/sh\nset -e\n"
        f'{pg.bindir / "pg_dump"} "$@"\n'
        'for a in "$@"; do case "$a" in --file=*) out="${a#--file=}";; esac; done\n'
        f"{fix}\n"
    )
    script.chmod(0o755)
    return bindir


def test_backup_wipe_restore_keeps_every_row(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """A backup, a wiped schema and a restore give back every job, segment, delivery and key."""
    name = _dbname(db)
    seed(pg, name, jobs=4)
    stand_in = ensure_api_keys(pg, name)
    before = snapshot(pg, name)
    assert {"jobs", "segments", "webhook_deliveries", "api_keys", "schema_migrations"} <= set(before)
    dump = _backup(tmp_path)
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert bk.checksum_state(bk.list_backups(dump.parent)[0]) == "ok"
    pg.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public", name)
    result = asrctl("restore", str(dump))
    assert result.exit_code == 0, result.stderr
    assert snapshot(pg, name) == before
    if stand_in:  # its sequence carries on where it was
        assert pg.psql("INSERT INTO api_keys (name, hash) VALUES ('new', 'h3') RETURNING id", name) == "3"


def test_restore_refuses_target_with_jobs(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """Restoring over a database that holds jobs is refused without --force and works with it."""
    name = _dbname(db)
    seed(pg, name, jobs=2)
    dump = _backup(tmp_path)
    seed(pg, name, jobs=1)
    assert_one_error_line(asrctl("restore", str(dump)), "holds 3 job(s)")
    assert pg.psql("SELECT count(*) FROM jobs", name) == "3"
    result = asrctl("restore", str(dump), "--force")
    assert result.exit_code == 0, result.stderr
    assert pg.psql("SELECT count(*) FROM jobs", name) == "2"


def test_restore_refuses_target_with_api_keys_only(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """A database with API keys but no jobs (a fresh install with keys made) is not overwritten without --force."""
    name = _dbname(db)
    dump = _backup(tmp_path)  # taken before any key exists
    pg.psql("INSERT INTO api_keys (name, hash, prefix) VALUES ('ops', 'h1', 'asr_')", name)
    assert_one_error_line(asrctl("restore", str(dump)), "holds 1 API key(s): not overwriting it without --force")
    assert pg.psql("SELECT count(*) FROM api_keys", name) == "1"
    assert asrctl("restore", str(dump), "--force").exit_code == 0
    assert pg.psql("SELECT count(*) FROM api_keys", name) == "0"


def test_restore_over_a_newer_schema_drops_its_extra_tables(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """An older dump restored over a newer schema gives exactly the dump's tables and rows."""
    # the newer schema's extra table has a foreign key to jobs, so dropping it must come first
    name = _dbname(db)
    seed(pg, name, jobs=2)
    before = snapshot(pg, name)
    dump = _backup(tmp_path)
    pg.psql("CREATE TABLE job_tags (job_id uuid REFERENCES jobs (id) ON DELETE CASCADE, tag text)", name)
    pg.psql("INSERT INTO job_tags SELECT id, 'x' FROM jobs", name)
    seed(pg, name, jobs=1)
    result = asrctl("restore", str(dump), "--force")
    assert result.exit_code == 0, result.stderr
    assert snapshot(pg, name) == before


def test_a_failed_restore_leaves_the_target_unchanged(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """A restore that fails half-way changes nothing: one transaction, rolled back."""
    # here it fails on a view, unknown to the dump, that depends on jobs
    name = _dbname(db)
    seed(pg, name, jobs=2)
    dump = _backup(tmp_path)
    seed(pg, name, jobs=1)
    pg.psql("CREATE TABLE extra (n int); CREATE VIEW busy AS SELECT id FROM jobs", name)
    before = snapshot(pg, name)
    result = asrctl("restore", str(dump), "--force")
    assert_one_error_line(result, "psql failed")
    assert "depend" in result.stderr, result.stderr
    assert snapshot(pg, name) == before
    assert pg.psql("SELECT count(*) FROM busy", name) == "3"


def test_restore_refused_while_the_daemon_runs(
    pg: services.Postgres, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With asr-server.service active, restoring over the live database is refused; --into is not."""
    dump = _backup(tmp_path)
    monkeypatch.setattr(host, "systemd_present", lambda: True)
    active = {"loaded": True, "active": "active", "sub": "running", "since": None}
    monkeypatch.setattr(host, "unit_state", lambda name: active)
    assert_one_error_line(asrctl("restore", str(dump), "--force"), "asr-server.service is running")
    assert asrctl("restore", str(dump), "--into", _dbname(db) + "_side").exit_code == 0


def test_restore_into_new_database(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """`--into NAME` creates the database and restores into it, leaving the source alone."""
    name = _dbname(db)
    seed(pg, name, jobs=2)
    dump = _backup(tmp_path)
    target = name + "_copy"
    result = asrctl("restore", str(dump), "--into", target, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["tables"]["segments"] == 4
    assert snapshot(pg, target) == snapshot(pg, name)


def test_restore_creates_a_missing_configured_database(
    pg: services.Postgres, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a fresh host the configured database may not exist yet: restore creates it."""
    seed(pg, _dbname(db), jobs=1)
    dump = _backup(tmp_path)
    monkeypatch.setenv("ASR_DATABASE_URL", pg.url(_dbname(db) + "_fresh"))
    result = asrctl("restore", str(dump))
    assert result.exit_code == 0, result.stderr
    assert snapshot(pg, _dbname(db) + "_fresh") == snapshot(pg, _dbname(db))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_dump_never_replaces_a_good_one(
    pg: services.Postgres, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """A truncated or corrupted dump fails verification: no file appears, nothing is pruned."""
    seed(pg, _dbname(db), jobs=30)
    good = _backup(tmp_path)
    before = sorted(p.name for p in good.parent.iterdir())
    monkeypatch.setenv("ASR_PG_BINDIR", str(_bad_bindir(tmp_path, pg, damage)))
    result = asrctl("backup", "--dir", str(good.parent), "--keep-daily", "0", "--keep-weekly", "0")
    assert_one_error_line(result, "nothing replaced or pruned")
    assert sorted(p.name for p in good.parent.iterdir()) == before
    assert bk.checksum_state(bk.list_backups(good.parent)[0]) == "ok"


def test_restore_refuses_damaged_or_missing_file(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """restore and restore --verify refuse a dump whose sha256 no longer matches, and a missing file."""
    seed(pg, _dbname(db), jobs=1)
    dump = _backup(tmp_path)
    with dump.open("r+b") as f:  # four bytes flipped (writing zeros changed nothing where they were zeros)
        f.seek(dump.stat().st_size // 2)
        middle = f.read(4)
        f.seek(dump.stat().st_size // 2)
        f.write(bytes(b ^ 0xFF for b in middle))
    assert_one_error_line(asrctl("restore", str(dump), "--into", "never_made"), "sha256 differs")
    assert_one_error_line(asrctl("restore", "--verify", str(dump)), "sha256 differs")
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'never_made'") == "0"
    assert_one_error_line(asrctl("restore", str(tmp_path / "nope.dump")), "no such file")


def test_restore_verify_drops_its_scratch_db(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """`restore --verify` reports counts and the latest migration, drops its scratch DB, marks the dump tried."""
    # `backup ls` then shows the dump as trial-restored
    seed(pg, _dbname(db), jobs=2)
    dump = _backup(tmp_path)
    result = asrctl("restore", "--verify", "--json", str(dump))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tables"]["jobs"] == 2 and report["latest_migration"] == migrate.load()[-1].name
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'asr_verify_%'") == "0"
    listed = json.loads(asrctl("backup", "ls", "--dir", str(dump.parent), "--json").stdout)["backups"]
    assert listed[0]["restore_verified_at"] is not None and listed[0]["checksum"] == "ok"


def test_backup_ls_shows_checksum_state(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """`backup ls` lists newest first and tells ok, mismatch and no-sidecar apart."""
    first = _backup(tmp_path)
    second = bk.take(db, first.parent, now=datetime.now(UTC) + timedelta(seconds=5)).backup.path
    third = bk.take(db, first.parent, now=datetime.now(UTC) + timedelta(seconds=10)).backup.path
    first.with_name(first.name + ".sha256").unlink()
    with second.open("ab") as f:
        f.write(b"x")
    listed = json.loads(asrctl("backup", "ls", "--dir", str(first.parent), "--json").stdout)["backups"]
    assert [(Path(b["file"]), b["checksum"]) for b in listed] == [
        (third, "ok"),
        (second, "mismatch"),
        (first, "no-sidecar"),
    ]
    assert all(b["age_s"] < 60 for b in listed)


def test_backup_with_audio_tars_uploads(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """--with-audio tars the uploads next to the dump, covered by the sidecar; without it the output says so."""
    # without --with-audio the output says the audio is not in the dump
    seed(pg, _dbname(db), jobs=2, audio_dir=tmp_path / "state" / "uploads")
    plain = asrctl("backup", "--dir", str(tmp_path / "b"))
    assert plain.exit_code == 0 and "audio is not in the dump" in plain.stdout
    dump = _backup(tmp_path, "--with-audio", "--verify")
    assert bk.restore_verified_at(bk.list_backups(dump.parent)[0]) is not None
    audio = dump.with_name(dump.name.replace(".dump", ".audio.tar"))
    with tarfile.open(audio) as tar:
        assert len(tar.getnames()) == 2
    assert audio.name in dump.with_name(dump.name + ".sha256").read_text()


def test_backup_with_database_down_fails_with_one_line(
    pg: services.Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL unreachable: one error line, non-zero exit, no file, and no password in output."""
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql://asr:s3cretpw@127.0.0.1:{services.free_port()}/asr")
    result = asrctl("backup", "--dir", str(tmp_path / "b"))
    assert_one_error_line(result, "Connection refused")
    assert "s3cretpw" not in result.output + result.stderr
    assert [p.name for p in (tmp_path / "b").iterdir()] == [".lock"]
    dump = tmp_path / "asr-20260101T000000Z.dump"
    dump.write_bytes(b"x")
    assert_one_error_line(asrctl("restore", str(dump)), "pg_restore failed")
    monkeypatch.setenv("ASR_PG_BINDIR", str(tmp_path / "nowhere"))
    assert_one_error_line(asrctl("backup", "--dir", str(tmp_path / "b")), "pg_dump not found")
    (tmp_path / "not-a-dir").write_text("x")
    assert_one_error_line(asrctl("backup", "--dir", str(tmp_path / "not-a-dir")), "backup failed")
    listed = asrctl("restore", "--verify", str(tmp_path / "nothing.dump"))
    assert_one_error_line(listed, "no such file")


def test_pg_tool_prefers_configured_bindir(tmp_path: Path) -> None:
    """ASR_PG_BINDIR wins; without it the newest /usr/lib/postgresql/N/bin is chosen."""
    assert bk.pg_tool("pg_dump", services.pg_bindir()) == str(services.pg_bindir() / "pg_dump")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), key=lambda p: int(p.split("/")[4]))
    assert bk.pg_tool("pg_dump") == (found[-1] if found else shutil.which("pg_dump"))
    with pytest.raises(bk.BackupError, match="not found in ASR_PG_BINDIR"):
        bk.pg_tool("pg_dump", tmp_path)


def test_backup_keep_flags_prune_older_dumps(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """`asrctl backup --keep-daily 2 --keep-weekly 0` keeps the newest dump of each of the last two
    backup days (today's new one included) and removes the others with their sidecars."""
    out = tmp_path / "b"
    now = datetime.now(UTC)
    old = [bk.take(db, out, now=now - timedelta(days=d)).backup.path for d in (3, 2, 1)]
    assert all(p.exists() for p in old)
    result = asrctl("backup", "--dir", str(out), "--keep-daily", "2", "--keep-weekly", "0", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    new = Path(json.loads(result.stdout)["file"])
    kept = sorted(p.name for p in out.glob("asr-*.dump"))
    assert kept == sorted([old[2].name, new.name])
    assert not [p for p in out.iterdir() if p.name.startswith((old[0].name, old[1].name))]


def test_restore_of_a_good_dump_with_database_down_fails_with_one_line(
    pg: services.Postgres, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid dump but PostgreSQL unreachable: `restore` and `restore --verify` fail with one line
    that names the connection, no password in it, and the dump is left as it was."""
    dump = _backup(tmp_path)
    before = dump.read_bytes()
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql://asr:s3cretpw@127.0.0.1:{services.free_port()}/asr")
    for args in (("restore", str(dump), "--force"), ("restore", "--verify", str(dump))):
        result = asrctl(*args)
        assert_one_error_line(result)
        assert "s3cretpw" not in result.output + result.stderr
        assert any(w in result.stderr.lower() for w in ("connect", "refused", "unreachable")), result.stderr
    assert dump.read_bytes() == before
