"""Database backups: `pg_dump -Fc`, verified, fsynced, renamed atomically, pruned by retention rules.

A backup is `asr-YYYYmmddTHHMMSSZ.dump` (UTC) in the backup directory, with a `sha256sum`-format
sidecar `<dump>.sha256`. `--with-audio` adds `asr-<stamp>.audio.tar` (the uploads directory; audio is
never in the dump) listed in the same sidecar. A dump is renamed into place only after
`pg_restore --list` (table of contents) and `pg_restore --file=/dev/null` (every data block
decompressed) accept it, so a truncated or corrupted dump never replaces or prunes a good one.

Retention (`prune`) follows restic's `--keep-daily/--keep-weekly` rules, by the UTC timestamp in the
file name: the newest backup of each of the N most recent days that have a backup is kept, and the
newest of each of the M most recent ISO weeks that have one; the union is kept, the newest backup
is always kept, the rest (with their sidecars and audio tars) is deleted. Files that do not match
the name pattern are never touched, except our own temporary files older than a day.

Blocking on purpose: this runs from the CLI (cron or a systemd timer), never inside the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asr_daemon import checksums, dsn

NAME = re.compile(r"^asr-(\d{8}T\d{6}Z)\.dump$")
STAMP = "%Y%m%dT%H%M%SZ"
TMP_PREFIX = ".tmp-asr-"
STALE_TMP_S = 86400.0


class BackupError(Exception):
    """A backup, verification or restore step failed; the message is one line for the operator."""


@dataclass(frozen=True)
class Backup:
    """One dump in the backup directory."""

    path: Path
    taken_at: datetime
    size: int

    @property
    def sidecar(self) -> Path:
        """The `sha256sum`-format checksum file."""
        return self.path.with_name(self.path.name + ".sha256")

    @property
    def audio(self) -> Path:
        """The uploads tar taken with `--with-audio` (it may not exist)."""
        return self.path.with_name(self.path.name.removesuffix(".dump") + ".audio.tar")

    @property
    def verified_marker(self) -> Path:
        """JSON written by `asrctl restore --verify` after a successful trial restore."""
        return self.path.with_name(self.path.name + ".verified")


# --- PostgreSQL client tools and connection strings ---------------------------------------------


def pg_tool(name: str, bindir: Path | None = None) -> str:
    """Path of a PostgreSQL client binary: in `bindir` if given, else the newest
    /usr/lib/postgresql/*/bin, else PATH. Raises BackupError when none is found."""
    if bindir is not None:
        exe = bindir / name
        if not os.access(exe, os.X_OK):
            raise BackupError(f"{name} not found in ASR_PG_BINDIR={bindir}")
        return str(exe)
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    versions = [p for p in found if p.split("/")[4].isdigit()]
    if versions:
        return max(versions, key=lambda p: int(p.split("/")[4]))
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise BackupError(f"{name} not found: install postgresql-client or set ASR_PG_BINDIR")


def libpq_args(url: str) -> tuple[str, dict[str, str]]:
    """(libpq conninfo without the password, environment with PGPASSWORD) for a client tool, so
    that the password never appears on a command line (visible in `ps`) or in output."""
    try:
        return dsn.for_tools(url)
    except dsn.DsnError as exc:
        raise BackupError(f"ASR_DATABASE_URL: {exc}") from None


def with_dbname(url: str, dbname: str) -> str:
    """The same DSN pointing at another database (any form libpq reads; see asr_daemon.dsn)."""
    try:
        return dsn.with_dbname(url, dbname)
    except dsn.DsnError as exc:
        raise BackupError(f"ASR_DATABASE_URL: {exc}") from None


def dbname_of(url: str) -> str:
    """Database named by a DSN (or PGDATABASE); libpq's fallback to the user name is not guessed."""
    try:
        name = dsn.dbname(url)
    except dsn.DsnError as exc:
        raise BackupError(f"ASR_DATABASE_URL: {exc}") from None
    if not name:
        raise BackupError("ASR_DATABASE_URL names no database")
    return name


def run_tool(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a client tool; on failure raise BackupError with its first error line. Returns stdout."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackupError(f"cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error:" in ln or "FATAL" in ln]
        detail = (errors or lines or [f"exit status {done.returncode}"])[0]
        raise BackupError(f"{os.path.basename(argv[0])} failed: {detail}")
    return done.stdout


# --- verification --------------------------------------------------------------------------------


def verify_dump(path: Path, bindir: Path | None = None) -> int:
    """Check a custom-format dump without a database: its table of contents, then a full read of
    every data block. Returns the number of TOC entries; raises BackupError when it is damaged."""
    pg_restore = pg_tool("pg_restore", bindir)
    toc = run_tool([pg_restore, "--list", str(path)])
    entries = sum(1 for ln in toc.splitlines() if ln and not ln.startswith(";"))
    if entries == 0:
        raise BackupError(f"{path.name}: the dump holds no objects")
    run_tool([pg_restore, "--file=/dev/null", str(path)])
    return entries


def _sums(backup: Backup) -> dict[str, str] | None:
    """The sidecar's lines as {file name: sha256}; None when there is no sidecar. Raises BackupError
    when it cannot be read (permissions)."""
    try:
        text = backup.sidecar.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(f"cannot read {backup.sidecar}: {getattr(exc, 'strerror', None) or exc}") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        out[name.strip()] = digest.strip()
    return out


def _matches(path: Path, digest: str) -> str:
    """`ok`, `mismatch` or `missing` for one file against its sidecar line; BackupError when unreadable."""
    if not path.is_file():
        return "missing"
    try:
        return "ok" if checksums.sha256_file(path) == digest else "mismatch"
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None


def checksum_state(backup: Backup) -> str:
    """The dump's own state by its line in the sidecar: `ok`, `mismatch` (it differs),
    `no-sidecar` (none), `unlisted` (the sidecar has no line for it). The `--with-audio` tar the
    sidecar also lists does not count here (see `audio_state`): copying only the dump and its sidecar
    is a whole database backup. Raises BackupError when the dump or its sidecar cannot be read."""
    sums = _sums(backup)
    if sums is None:
        return "no-sidecar"
    if backup.path.name not in sums:
        return "unlisted"
    return _matches(backup.path, sums[backup.path.name])


def audio_state(backup: Backup) -> str | None:
    """The `--with-audio` tar's state: None when there is none (not listed, not present), else `ok`,
    `mismatch`, `missing` (listed but absent: only the dump was copied) or `unlisted` (present, no
    sidecar line for it). Raises BackupError when the tar or the sidecar cannot be read."""
    sums = _sums(backup) or {}
    name = backup.audio.name
    if name not in sums:
        return "unlisted" if backup.audio.exists() else None
    return _matches(backup.audio, sums[name])


def restore_verified_at(backup: Backup) -> datetime | None:
    """When `restore --verify` last succeeded on this dump, if ever."""
    try:
        data = json.loads(backup.verified_marker.read_text())
        return datetime.fromisoformat(data["verified_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- taking a backup -----------------------------------------------------------------------------


def _create_private(path: Path) -> None:
    """Create an empty file readable by its owner only (a dump holds every transcript)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    _create_private(tmp)
    tmp.write_text(text)
    checksums.fsync(tmp)
    os.replace(tmp, path)


def archive_uploads(uploads_dir: Path, dest: Path) -> int:
    """Write an uncompressed tar of the uploads directory (audio is already compressed) to `dest`;
    returns the number of files in it. A missing directory gives an empty tar."""
    count = 0
    with tarfile.open(dest, "w") as tar:
        if uploads_dir.is_dir():
            for item in sorted(uploads_dir.iterdir()):
                if item.is_file() and not item.name.startswith("."):
                    tar.add(item, arcname=f"uploads/{item.name}", recursive=False)
                    count += 1
    return count


@dataclass(frozen=True)
class Taken:
    """Result of `take`."""

    backup: Backup
    toc_entries: int
    audio_files: int | None


def take(
    database_url: str,
    directory: Path,
    *,
    bindir: Path | None = None,
    uploads_dir: Path | None = None,
    now: datetime | None = None,
) -> Taken:
    """Dump the database to `directory`, verify, fsync, rename into place, write the sidecar.

    With `uploads_dir`, also tar the uploads next to the dump. Nothing named `asr-*.dump` appears
    unless the dump passed verification.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    taken_at = (now or datetime.now(UTC)).replace(microsecond=0)
    if now is None and (directory / f"asr-{taken_at.strftime(STAMP)}.dump").exists():
        time.sleep(1.0)  # names have one-second resolution: a second run in the same second waits
        taken_at = datetime.now(UTC).replace(microsecond=0)
    final = directory / f"asr-{taken_at.strftime(STAMP)}.dump"
    backup = Backup(final, taken_at, 0)
    if final.exists():
        raise BackupError(f"{final} already exists: one backup per second at most")
    tmp = directory / f"{TMP_PREFIX}{final.name}.{os.getpid()}"
    tmp_audio = directory / f"{TMP_PREFIX}{backup.audio.name}.{os.getpid()}"
    url, env = libpq_args(database_url)
    try:
        _create_private(tmp)
        run_tool(
            [pg_tool("pg_dump", bindir), "--format=custom", "--no-password", f"--file={tmp}", f"--dbname={url}"], env
        )
        entries = verify_dump(tmp, bindir)
        checksums.fsync(tmp)
        sums = f"{checksums.sha256_file(tmp)}  {final.name}\n"
        audio_files = None
        if uploads_dir is not None:
            _create_private(tmp_audio)
            audio_files = archive_uploads(uploads_dir, tmp_audio)
            checksums.fsync(tmp_audio)
            sums += f"{checksums.sha256_file(tmp_audio)}  {backup.audio.name}\n"
            os.replace(tmp_audio, backup.audio)
        os.replace(tmp, final)
        _write_atomic(backup.sidecar, sums)
        checksums.fsync(directory)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_audio.unlink(missing_ok=True)
    return Taken(Backup(final, taken_at, final.stat().st_size), entries, audio_files)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the backup directory's lock (`.lock`), so that two runs (cron and timer, or a manual run
    during the nightly one) never dump or prune at once. Raises BackupError when it is held."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup is running in {directory}") from None
        yield
    finally:
        os.close(fd)


# --- listing and retention -----------------------------------------------------------------------


def list_backups(directory: Path) -> list[Backup]:
    """Backups in `directory`, newest first (an absent directory holds none)."""
    found: list[Backup] = []
    if not directory.is_dir():
        return found
    for item in directory.iterdir():
        m = NAME.match(item.name)
        if m and item.is_file():
            taken_at = datetime.strptime(m.group(1), STAMP).replace(tzinfo=UTC)
            found.append(Backup(item, taken_at, item.stat().st_size))
    return sorted(found, key=lambda b: b.taken_at, reverse=True)


def retained(stamps: list[datetime], keep_daily: int, keep_weekly: int) -> set[datetime]:
    """Which timestamps the retention rules keep (see the module docstring). Pure."""
    ordered = sorted(set(stamps), reverse=True)
    keep: set[datetime] = set(ordered[:1])
    rules: list[tuple[int, str]] = [(keep_daily, "day"), (keep_weekly, "week")]
    for count, unit in rules:
        seen: set[object] = set()
        for ts in ordered:
            utc = ts.astimezone(UTC)
            key: object = utc.date() if unit == "day" else tuple(utc.isocalendar())[:2]
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(key)
            keep.add(ts)
    return keep


def prune(directory: Path, keep_daily: int, keep_weekly: int) -> list[Path]:
    """Delete the backups the rules do not keep (with sidecars, audio tars, markers) and our stale
    temporary files; returns the dumps deleted."""
    backups = list_backups(directory)
    keep = retained([b.taken_at for b in backups], keep_daily, keep_weekly)
    removed: list[Path] = []
    for b in backups:
        if b.taken_at in keep:
            continue
        for extra in (b.sidecar, b.audio, b.verified_marker):
            extra.unlink(missing_ok=True)
        b.path.unlink(missing_ok=True)
        removed.append(b.path)
    if directory.is_dir():
        for item in directory.glob(f"{TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if time.time() - item.stat().st_mtime > STALE_TMP_S:
                    item.unlink()
    return removed
