"""The daemon's log on a terminal (for a person) and elsewhere (JSON lines), and its ready line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from asr_daemon import logs


class Tty(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        """Yes: a terminal."""
        return True


@pytest.fixture
def fresh_logger() -> Iterator[logging.Logger]:
    """The package logger without handlers, restored afterwards."""
    root = logging.getLogger("asr_daemon")
    saved = root.handlers[:], root.level, root.propagate
    root.handlers = []
    yield root
    root.handlers, root.level, root.propagate = saved[0], saved[1], saved[2]


def test_a_terminal_gets_lines_for_a_person(fresh_logger: logging.Logger) -> None:
    """stderr on a TTY: `HH:MM:SS.mmm level event key=value`, times to the millisecond, not JSON."""
    out = Tty()
    logs.configure("INFO", out)
    logs.configure("INFO", out)  # idempotent: one handler
    logging.getLogger("asr_daemon.pipeline.worker").info(
        "job_completed", extra={"job_id": "abc", "transcribe_s": 1.23456}
    )
    line = out.getvalue().strip()
    assert len(out.getvalue().splitlines()) == 1
    assert not line.startswith("{")
    assert "job_completed" in line and "job_id=abc" in line and "transcribe_s=1.235" in line
    assert line[2] == ":" and line[8] == "." and "info" in line


def test_anything_else_gets_json_lines(fresh_logger: logging.Logger) -> None:
    """stderr to a file or journald: one JSON object per line, as before."""
    out = io.StringIO()
    logs.configure("INFO", out)
    logging.getLogger("asr_daemon.pipeline.worker").warning("model_over_budget", extra={"model": "base"})
    record = json.loads(out.getvalue())
    assert record["event"] == "model_over_budget" and record["level"] == "warning" and record["model"] == "base"


def test_stamina_retries_leave_no_line_outside_the_json_format(
    fresh_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A retry scheduled by stamina writes no `stamina.retry_scheduled` line of its own (the daemon's
    events say it); what stamina logs at ERROR is a JSON line like every other."""
    import stamina

    root, retries = logging.getLogger(), logging.getLogger("stamina")
    saved = root.handlers[:], root.level, retries.handlers[:], retries.level, retries.propagate
    out = io.StringIO()
    logs.configure("INFO", out)
    root.addHandler(logging.StreamHandler())  # a root handler on stderr, as Litestar installs one
    root.setLevel(logging.DEBUG)
    try:
        for attempt in stamina.retry_context(on=OSError, attempts=2, wait_initial=0, wait_jitter=0):
            with attempt:
                if attempt.num == 1:
                    raise OSError("first try")
        retries.error("stamina.gave_up", extra={"tries": 2})
    finally:
        root.handlers, root.level = saved[0], saved[1]
        retries.handlers, retries.level, retries.propagate = saved[2], saved[3], saved[4]
    lines = out.getvalue().splitlines() + capsys.readouterr().err.splitlines()
    assert "retry_scheduled" not in "".join(lines)
    assert [json.loads(line)["event"] for line in lines] == ["stamina.gave_up"]


def test_ready_line_says_where_what_docs_and_how_to_stop() -> None:
    """The one human line: URL, model and device, where the docs are, how to stop."""
    line = logs.ready_line("127.0.0.1", 8765, "base", "cpu", "int8")
    assert line == (
        "asr-server ready: http://127.0.0.1:8765 · model base on cpu (int8)"
        " · API docs http://127.0.0.1:8765/docs · Ctrl-C stops it"
    )
    assert "http://127.0.0.1:9000 (listening on all interfaces, 0.0.0.0)" in logs.ready_line(
        "0.0.0.0", 9000, "base", "cuda", "float16"
    )
    assert "http://[::1]:8765/docs" in logs.ready_line("::1", 8765, "base", "cpu", "int8")
