"""What `describe` offers and which model a voice command runs on: languages read off the real models'
vocabularies, client language tags normalised, and a German command on an English-only default
routed to a multilingual model (Home Assistant names no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_daemon import errors
from asr_daemon.config import Settings
from asr_daemon.engine import modelchoice
from asr_daemon.wyoming import catalog


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    """Settings whose models are the packaged tiny.en and base, tiny.en the default."""
    (tmp_path / "models").symlink_to(models_dir)
    return Settings(state_dir=tmp_path, model="tiny.en")


def test_languages_come_from_the_vocabulary(settings: Settings) -> None:
    """tiny.en speaks English only; base speaks Whisper's 99 languages (Cantonese came with large-v3)."""
    assert modelchoice.languages("tiny.en", settings.models_dir / "tiny.en") == ["en"]
    base = modelchoice.languages("base", settings.models_dir / "base")
    assert len(base) == 99 and {"en", "de", "fr", "ja"} <= set(base) and "yue" not in base


def test_a_language_the_model_does_not_transcribe_is_refused_naming_one_that_does(settings: Settings) -> None:
    """An English-only model asked for German is a 400 naming a local multilingual model; English, no language,
    and a multilingual model pass."""
    d = settings.models_dir
    with pytest.raises(errors.BadRequest, match=r"'tiny.en' transcribes English only, not language 'de'.*'base'"):
        modelchoice.for_language(d, None, "tiny.en", "de")  # the default model
    assert modelchoice.for_language(d, "tiny.en", "tiny.en", "en") == "tiny.en"
    assert modelchoice.for_language(d, "whisper-1", "tiny.en", None) == "tiny.en"
    assert modelchoice.for_language(d, "base", "tiny.en", "de") == "base"


def test_describe_offers_the_local_models_default_first(settings: Settings) -> None:
    """`info` holds one streaming ASR program listing every local model, the default first."""
    info = catalog.describe(settings)
    (program,) = info.asr
    assert program.supports_transcript_streaming and program.name == catalog.PROGRAM
    assert [m.name for m in program.models] == ["tiny.en", "base"]
    assert program.models[0].description is not None and "default" in program.models[0].description


@pytest.mark.parametrize(
    ("raw", "code"),
    [(None, None), ("", None), ("en", "en"), ("EN", "en"), ("en-US", "en"), ("de_DE", "de"), ("yue", "yue")],
)
def test_language_tags_are_normalised(raw: object, code: str | None) -> None:
    """Regional and upper-case tags become Whisper's codes; none means detect."""
    assert catalog.normalize_language(raw) == code


@pytest.mark.parametrize("raw", ["klingon", "xx-YY", 5, "e" * 100])
def test_unknown_languages_are_refused(raw: object) -> None:
    """A tag Whisper cannot map is a clear 400, not a failed job later."""
    with pytest.raises(errors.BadRequest):
        catalog.normalize_language(raw)


def test_the_model_is_chosen_by_name_then_by_language(settings: Settings) -> None:
    """Named → that model; unnamed → the default if it speaks the language, else a local model that does."""
    assert catalog.choose(settings, None, None) == "tiny.en"
    assert catalog.choose(settings, None, "en") == "tiny.en"
    assert catalog.choose(settings, None, "de") == "base"
    assert catalog.choose(settings, catalog.PROGRAM, "de") == "base"
    assert catalog.choose(settings, "base", "en") == "base"
    with pytest.raises(errors.ModelNotFound):
        catalog.choose(settings, "large-v9", None)
    with pytest.raises(errors.BadRequest, match="does not transcribe"):
        catalog.choose(settings, "tiny.en", "de")
    with pytest.raises(errors.BadRequest):
        catalog.choose(settings, ["base"], None)


def test_no_local_model_is_a_model_not_found(tmp_path: Path) -> None:
    """A host without models answers with how to get one."""
    with pytest.raises(errors.ModelNotFound):
        catalog.choose(Settings(state_dir=tmp_path, model="tiny.en"), None, "en")
