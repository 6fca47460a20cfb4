"""`backup ls` and `restore` on backups copied in part (the dump without its audio tar) or that
cannot be read, against a real PostgreSQL server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests import services
from tests.integration.ops_support import (
    asrctl,
    assert_one_error_line,
    assert_one_error_line_of,
    db,
    needs_permissions,
    seed,
    unprivileged,
)

__all__ = ["db"]  # a fixture, imported for pytest


def _with_audio(pg: services.Postgres, db: str, tmp_path: Path) -> Path:
    seed(pg, db.rsplit("/", 1)[1], jobs=2, audio_dir=tmp_path / "state" / "uploads")
    result = asrctl("backup", "--dir", str(tmp_path / "b"), "--with-audio", "--json")
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["file"])


def _copy(dump: Path, dest: Path, *, audio: bool) -> Path:
    """What an operator copies off the host: the dump and its sidecar, the audio tar only if asked."""
    dest.mkdir()
    names = [dump.name, dump.name + ".sha256"] + ([dump.name.replace(".dump", ".audio.tar")] if audio else [])
    for name in names:
        shutil.copy2(dump.with_name(name), dest / name)
    return dest / dump.name


def test_a_dump_copied_without_its_audio_tar_is_intact(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """Only `asr-X.dump` + `.sha256` of a --with-audio backup: ls says the dump is ok and the audio
    missing; restore --verify and restore --into load it and name the missing tar apart."""
    dump = _copy(_with_audio(pg, db, tmp_path), tmp_path / "copy", audio=False)
    listed = json.loads(asrctl("backup", "ls", "--dir", str(dump.parent), "--json").stdout)["backups"]
    assert (listed[0]["checksum"], listed[0]["audio_checksum"], listed[0]["audio"]) == ("ok", "missing", None)
    table = asrctl("backup", "ls", "--dir", str(dump.parent))
    assert table.exit_code == 0 and "missing" in table.stdout and "mismatch" not in table.stdout
    verified = asrctl("restore", "--verify", str(dump))
    assert verified.exit_code == 0, verified.stderr
    assert "audio.tar is listed" in verified.stdout
    restored = asrctl("restore", str(dump), "--into", "from_copy", "--json")
    assert restored.exit_code == 0, restored.stderr
    assert json.loads(restored.stdout)["audio_checksum"] == "missing"
    assert pg.psql("SELECT count(*) FROM jobs", "from_copy") == "2"
    pg.psql("DROP DATABASE from_copy")


def test_a_damaged_audio_tar_does_not_make_the_dump_damaged(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """A flipped byte in the audio tar: the dump stays `ok`, the tar is `mismatch`, restore proceeds
    and says the tar is damaged; a damaged dump is still refused."""
    dump = _copy(_with_audio(pg, db, tmp_path), tmp_path / "copy", audio=True)
    tar = dump.with_name(dump.name.replace(".dump", ".audio.tar"))
    tar.write_bytes(b"\xff" + tar.read_bytes()[1:])
    listed = json.loads(asrctl("backup", "ls", "--dir", str(dump.parent), "--json").stdout)["backups"]
    assert (listed[0]["checksum"], listed[0]["audio_checksum"]) == ("ok", "mismatch")
    verified = asrctl("restore", "--verify", str(dump))
    assert verified.exit_code == 0, verified.stderr
    assert "the audio tar is damaged" in verified.stdout
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    assert_one_error_line(asrctl("restore", "--verify", str(dump)), "sha256 differs")


@pytest.mark.parametrize("target", ["template1", "postgres", "asr_tpl"])
def test_restore_refuses_template_and_maintenance_databases(
    pg: services.Postgres, db: str, tmp_path: Path, target: str
) -> None:
    """`restore --into template1/postgres/<a template>` is refused with one line, and the target keeps
    no asr table (else every CREATE DATABASE would copy them)."""
    seed(pg, db.rsplit("/", 1)[1], jobs=1)
    result = asrctl("backup", "--dir", str(tmp_path / "b"), "--json")
    dump = Path(json.loads(result.stdout)["file"])
    if target == "asr_tpl":
        pg.psql("CREATE DATABASE asr_tpl IS_TEMPLATE true")
    try:
        refused = asrctl("restore", str(dump), "--into", target, "--force")
        assert_one_error_line(refused, "template" if target != "postgres" else "maintenance database")
        assert pg.psql("SELECT to_regclass('public.jobs') IS NULL", target) == "t"
    finally:
        if target == "asr_tpl":
            pg.psql("ALTER DATABASE asr_tpl IS_TEMPLATE false")
            pg.psql("DROP DATABASE asr_tpl")


@needs_permissions
def test_an_unreadable_backup_directory_is_an_error_not_none(
    pg: services.Postgres, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backup directory without read permission: `backup ls` fails in one line, `status` says it
    cannot read it (never "none in DIR")."""
    seed(pg, db.rsplit("/", 1)[1], jobs=1)
    result = asrctl("backup", "--dir", str(tmp_path / "b"), "--json")
    directory = Path(json.loads(result.stdout)["file"]).parent
    monkeypatch.setenv("ASR_BACKUP_DIR", str(directory))
    directory.chmod(0)
    try:
        assert_one_error_line_of(unprivileged("backup", "ls"), f"cannot list {directory}: Permission denied")
        status = unprivileged("status", "--json")
        assert status.returncode == 0, status.stderr
        backups = json.loads(status.stdout)["backups"]
        assert (backups["count"], backups["error"]) == (None, "Permission denied")
        screen = " ".join(unprivileged("status").stdout.split())
        assert f"cannot read {directory}: Permission denied" in screen and "none" not in screen
    finally:
        directory.chmod(0o700)


@needs_permissions
def test_an_unreadable_sidecar_or_dump_is_named_in_one_line(pg: services.Postgres, db: str, tmp_path: Path) -> None:
    """A .sha256 (or a dump) without read permission: `backup ls` still lists, marks it `unreadable`
    and exits 1 with one line naming the file; `restore --verify` refuses it in one line."""
    dump = _with_audio(pg, db, tmp_path)
    sidecar = dump.with_name(dump.name + ".sha256")
    sidecar.chmod(0)
    listed = unprivileged("backup", "ls", "--dir", str(dump.parent), "--json")
    assert_one_error_line_of(listed, f"cannot read {sidecar}: Permission denied")
    row = json.loads(listed.stdout)["backups"][0]
    assert (row["checksum"], row["audio_checksum"]) == ("unreadable", "unreadable")
    assert_one_error_line_of(
        unprivileged("restore", "--verify", str(dump)), f"cannot read {sidecar}: Permission denied"
    )
    sidecar.chmod(0o600)
    dump.chmod(0)
    assert_one_error_line_of(
        unprivileged("backup", "ls", "--dir", str(dump.parent)), f"cannot read {dump}: Permission denied"
    )
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'asr_verify_%'") == "0"
