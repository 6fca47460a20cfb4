"""Backup retention: exactly what --keep-daily/--keep-weekly keep, on synthetic timestamps."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asr_daemon.ops import backup as bk


def ts(text: str) -> datetime:
    """'2026-11-25 03:15' in UTC."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def nightly(first: str, last: str) -> list[datetime]:
    """One backup at 03:15 every day from `first` to `last` (dates)."""
    day, end = ts(first + " 03:15"), ts(last + " 03:15")
    out = []
    while day <= end:
        out.append(day)
        day += timedelta(days=1)
    return out


def test_seven_daily_four_weekly_over_forty_nights() -> None:
    """7 daily + 4 weekly keeps the last 7 nights plus the newest of each of the 4 newest ISO weeks."""
    kept = bk.retained(nightly("2026-10-17", "2026-11-25"), 7, 4)
    expected = [f"2026-11-{d:02d} 03:15" for d in (8, 15, 19, 20, 21, 22, 23, 24, 25)]
    assert sorted(kept) == [ts(e) for e in expected]


def test_newest_of_each_day_only() -> None:
    """Two backups on one day: the daily rule keeps the later one."""
    stamps = [ts("2026-11-25 03:00"), ts("2026-11-25 15:00"), ts("2026-11-24 03:00")]
    assert bk.retained(stamps, 1, 0) == {ts("2026-11-25 15:00")}
    assert bk.retained(stamps, 2, 0) == {ts("2026-11-25 15:00"), ts("2026-11-24 03:00")}


def test_days_without_backups_do_not_count() -> None:
    """The daily rule counts days that have a backup, not calendar days (a gap keeps older ones)."""
    stamps = [ts("2026-11-01 03:15"), ts("2026-11-10 03:15"), ts("2026-11-20 03:15")]
    assert bk.retained(stamps, 2, 0) == {ts("2026-11-20 03:15"), ts("2026-11-10 03:15")}


def test_zero_rules_still_keep_the_newest() -> None:
    """--keep-daily 0 --keep-weekly 0 never deletes the newest backup."""
    stamps = nightly("2026-11-01", "2026-11-05")
    assert bk.retained(stamps, 0, 0) == {ts("2026-11-05 03:15")}
    assert bk.retained([], 3, 3) == set()


def test_iso_weeks_span_the_new_year() -> None:
    """ISO weeks, not calendar years: 2026-12-31 and 2027-01-01 share week 2026-W53."""
    stamps = [ts("2026-12-27 03:15"), ts("2026-12-31 03:15"), ts("2027-01-01 03:15")]
    assert bk.retained(stamps, 0, 2) == {ts("2027-01-01 03:15"), ts("2026-12-27 03:15")}


def test_prune_deletes_exactly_the_unkept_files(tmp_path: Path) -> None:
    """prune removes unkept dumps with their sidecars, tars and markers, and nothing else it should keep."""
    # foreign files and fresh temporary files stay; temporary files older than a day go
    for stamp in nightly("2026-10-17", "2026-11-25"):
        dump = tmp_path / f"asr-{stamp.strftime(bk.STAMP)}.dump"
        dump.write_bytes(b"x")
        for suffix in (".dump.sha256", ".audio.tar", ".dump.verified"):
            dump.with_name(dump.name.removesuffix(".dump") + suffix).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "asr-latest.dump").write_text("not ours")
    stale, fresh = tmp_path / ".tmp-asr-old.dump.1", tmp_path / ".tmp-asr-new.dump.2"
    stale.write_text("x")
    fresh.write_text("x")
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))

    removed = bk.prune(tmp_path, 7, 4)

    assert len(removed) == 40 - 9
    left = sorted(p.name for p in tmp_path.iterdir())
    days = (8, 15, 19, 20, 21, 22, 23, 24, 25)
    expected = [
        f"asr-202611{d:02d}T031500Z{s}" for d in days for s in (".audio.tar", ".dump", ".dump.sha256", ".dump.verified")
    ]
    assert left == sorted([*expected, ".tmp-asr-new.dump.2", "asr-latest.dump", "notes.txt"])
