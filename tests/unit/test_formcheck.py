"""formcheck.FieldCheck: each form field judged alone, as it arrives, with the full check's messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asr_daemon import errors, jobs
from asr_daemon.config import Settings
from asr_daemon.pipeline.formcheck import FieldCheck


@pytest.fixture
def check(tmp_path: Path, models_dir: Path) -> FieldCheck:
    """A check for /v1/audio/transcriptions on a host holding tiny.en, with no webhook secret."""
    (tmp_path / "models").symlink_to(models_dir)
    return FieldCheck(Settings(state_dir=tmp_path, model="tiny.en"), jobs.Task.TRANSCRIBE, allow_task_field=False)


def run(check: FieldCheck, name: str, *values: str) -> None:
    """Check one field."""
    asyncio.run(check(name, list(values)))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model", "tiny.en"),
        ("model", "whisper-1"),
        ("language", "EN"),
        ("response_format", "srt"),
        ("temperature", "0.2"),
        ("stream", "true"),
        ("diarize", "false"),
        ("num_speakers", "2"),
        ("known_speaker_names[]", "Ann"),  # pairs with its reference later: judged once the form is in
        ("timestamp_granularities[]", "word"),
    ],
)
def test_good_fields_pass(check: FieldCheck, name: str, value: str) -> None:
    """Valid values (and fields only the whole form can judge) are let through."""
    run(check, name, value)


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        ("model", "no-such-model", errors.ModelNotFound, "not available here"),
        ("language", "xx", errors.BadRequest, "language 'xx' is not supported"),
        ("response_format", "pdf", errors.BadRequest, "response_format must be one of"),
        ("temperature", "7", errors.BadRequest, "temperature must be between"),
        ("task", "translate", errors.BadRequest, "'task' is not accepted here"),
        ("webhook_url", "https://example.com/h", errors.BadRequest, "ASR_WEBHOOK_SECRET"),
        ("webhook_url", "ftp://x", errors.BadRequest, "http:// or https://"),
        ("diarize", "maybe", errors.BadRequest, "diarize must be true or false"),
        ("num_speakers", "99", errors.BadRequest, "num_speakers must be between"),
        ("colour", "red", errors.BadRequest, "unknown field"),
    ],
)
def test_bad_fields_are_refused_with_the_full_checks_error(
    check: FieldCheck, name: str, value: str, error: type[errors.AsrError], message: str
) -> None:
    """A bad value raises the same domain error (status and message) as the check of the whole form."""
    with pytest.raises(error, match=message):
        run(check, name, value)


def test_a_field_repeated_with_another_value_is_refused(check: FieldCheck) -> None:
    """The same field twice with different values is a 400 as soon as the second arrives."""
    run(check, "language", "en")
    with pytest.raises(errors.BadRequest, match="given 2 times"):
        run(check, "language", "en", "fr")
