"""`asrctl search` against the real daemon: `job  hh:mm:ss  text` lines with the match emphasized."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from asr_daemon.cli.search import clock, line
from asr_daemon.ops import host
from asr_daemon.queries.search import MAX_QUERY_CHARS
from tests.conftest import Daemon
from tests.e2e.test_jobs import submit, wait_status
from tests.integration.ops_support import asrctl, assert_one_error_line


@pytest.fixture
def cli_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """The CLI configured like the running daemon, no systemd."""
    for key, value in daemon.env.items():
        if key.startswith("ASR_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("ASR_URL", raising=False)
    monkeypatch.setattr(host, "systemd_present", lambda: False)
    return daemon


def test_search_prints_job_time_and_text_with_the_match_emphasized(
    cli_env: Daemon, jfk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line per hit: the short job id, hh:mm:ss, the text; on a colour terminal the match is styled."""
    with httpx.Client(base_url=cli_env.url, timeout=120) as c:
        job = wait_status(c, submit(c, jfk).json()["id"], {"completed"})
    plain = asrctl("search", "country")
    assert plain.exit_code == 0, plain.stderr
    first = plain.stdout.splitlines()[0]
    assert re.fullmatch(rf"{job['id'][:8]}  00:00:0\d  \S.*country.*", first, re.IGNORECASE), first
    monkeypatch.setenv("FORCE_COLOR", "1")
    coloured = asrctl("search", "country")
    assert re.search(r"\x1b\[[0-9;]*m[Cc]ountry\x1b\[0m", coloured.stdout), repr(coloured.stdout)


def test_search_without_hits_exits_1_and_bad_queries_fail_in_one_line(cli_env: Daemon) -> None:
    """No match: exit 1 and 'no matches' (like grep); an empty query or an unreachable daemon: one error
    line; a query the daemon refuses (400) exits 2, as a bad argument."""
    none = asrctl("search", "zyzzyva")
    assert none.exit_code == 1 and "no matches" in none.stderr
    assert_one_error_line(asrctl("search", " "), "the query is empty")
    assert_one_error_line(asrctl("search", "x", "--limit", "5", "--url", "http://127.0.0.1:1"), "cannot reach")
    too_long = asrctl("search", "word " * (MAX_QUERY_CHARS // 5 + 1))  # the daemon's 400: a bad argument
    assert_one_error_line(too_long, "HTTP 400")
    assert too_long.exit_code == 2


def test_a_line_emphasizes_only_the_offsets_given() -> None:
    """The offsets (into the text with its leading space) mark exactly those characters."""
    text = line({"job_id": "0123456789abcdef", "start": 3725.9, "text": " Run, run away", "matches": [[1, 4], [6, 9]]})
    assert text.plain == "01234567  01:02:05  Run, run away"
    styled = [text.plain[s.start : s.end] for s in text.spans]
    assert styled == ["Run", "run"]
    assert clock(59.99) == "00:00:59"
