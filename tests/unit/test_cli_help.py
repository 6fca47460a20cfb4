"""`asrctl --help` and its groups' help read cleanly."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from asr_daemon.cli import app


@pytest.mark.parametrize("args", [[], ["backup"], ["jobs", "show"], ["restore"], ["models", "ls"]], ids=" ".join)
def test_flags_show_no_type(args: list[str]) -> None:
    """No `<bool>` beside a flag (the completion flags, --help, --json), while valued options keep their type."""
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--help" in result.output
    if args == ["backup"]:
        assert "<int range>" in result.output and "<path>" in result.output
