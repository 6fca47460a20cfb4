"""Validation of transcription form fields and the job state machine (pure, no services)."""

from __future__ import annotations

import pytest

from asr_daemon import jobs


def parse(**fields: str | list[str]) -> jobs.Request:
    """Parse a form given as keyword fields."""
    form = {k.replace("__", "[]"): v if isinstance(v, list) else [v] for k, v in fields.items()}
    return jobs.parse_request(form, jobs.Task.TRANSCRIBE)


def test_defaults_are_openai_defaults() -> None:
    """An empty form means json output, default model, transcription."""
    req = parse()
    assert req.response_format is jobs.ResponseFormat.JSON and req.model is None
    assert req.options == jobs.Options()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"response_format": "pdf"}, "response_format must be one of"),
        ({"temperature": "1.5"}, "temperature must be between 0 and 1"),
        ({"temperature": "nan"}, "temperature must be between"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"language": "klingon"}, "language 'klingon' is not supported"),
        ({"bogus": "1"}, "unknown field"),
        ({"language": ["en", "de"]}, "given 2 times with different values"),
        ({"timestamp_granularities__": "char"}, "timestamp_granularities may hold"),
        ({"task": "translate"}, "use /v1/audio/translations"),
        ({"webhook_url": "ftp://x"}, "webhook_url must be"),
        ({"stream": "maybe"}, "stream must be true or false"),
        ({"beam_size": "0"}, "beam_size must be between 1 and 20"),
    ],
)
def test_bad_fields_are_refused_with_a_message_naming_them(fields: dict[str, str], message: str) -> None:
    """Each invalid field value raises Invalid with a message a person understands."""
    with pytest.raises(jobs.Invalid, match=message):
        parse(**fields)


def test_word_granularity_and_language_normalisation() -> None:
    """Word granularity turns on word timestamps; language codes are case-insensitive."""
    req = parse(timestamp_granularities__=["word", "segment"], language="EN", temperature="0.2")
    assert req.options.word_timestamps and req.options.language == "en" and req.options.temperature == 0.2


def test_identical_options_share_a_fingerprint() -> None:
    """Deduplication keys depend on audio, model and options only."""
    a, b = jobs.Options(language="en"), jobs.Options(language="en")
    assert a.fingerprint("tiny.en", "x") == b.fingerprint("tiny.en", "x")
    assert a.fingerprint("tiny.en", "x") != a.fingerprint("base", "x")
    assert a.fingerprint("tiny.en", "x") != jobs.Options().fingerprint("tiny.en", "x")
    assert jobs.Options.from_json(a.to_json()) == a
