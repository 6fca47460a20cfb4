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
        ({"chunking_strategy": "sometimes"}, "chunking_strategy must be 'auto' or an object"),
        ({"chunking_strategy[type]": "semantic"}, r"chunking_strategy\[type\] must be 'server_vad'"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "2"}, "threshold must be between"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[bogus]": "1"}, "unknown field"),
    ],
)
def test_bad_fields_are_refused_with_a_message_naming_them(fields: dict[str, str], message: str) -> None:
    """Each invalid field value raises Invalid with a message a person understands."""
    with pytest.raises(jobs.Invalid, match=message):
        parse(**fields)


def test_openai_chunking_strategy_turns_the_vad_on_with_its_settings() -> None:
    """`chunking_strategy` as the OpenAI SDK sends it: `auto` leaves the VAD off; a `server_vad` object turns it on
    with its threshold, silence and padding as faster-whisper names them (and stored with the job's options)."""
    assert parse(chunking_strategy="auto").options == jobs.Options()
    form = {
        "chunking_strategy[type]": ["server_vad"],
        "chunking_strategy[threshold]": ["0.6"],
        "chunking_strategy[silence_duration_ms]": ["700"],
        "chunking_strategy[prefix_padding_ms]": ["300"],
    }
    options = jobs.parse_request(form, jobs.Task.TRANSCRIBE).options
    assert options.vad_filter and options.vad is not None
    assert options.vad.faster_whisper() == {"threshold": 0.6, "min_silence_duration_ms": 700, "speech_pad_ms": 300}
    assert jobs.Options.from_json(options.to_json()) == options
    assert options.fingerprint("m", "x") != jobs.Options(vad_filter=True).fingerprint("m", "x")
    bare = jobs.parse_request({"chunking_strategy[type]": ["server_vad"]}, jobs.Task.TRANSCRIBE).options
    assert bare.vad_filter and bare.vad is not None and bare.vad.faster_whisper() == {}
    untyped = jobs.parse_request({"chunking_strategy[threshold]": ["0.5"]}, jobs.Task.TRANSCRIBE).options
    assert untyped.vad == jobs.VadParameters(threshold=0.5)  # server_vad: the one type there is


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
