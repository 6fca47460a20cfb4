"""The typed job rows: built from a record the way every query builds them, tolerant of what other
versions may have stored."""

from __future__ import annotations

import hashlib
import json

from asr_daemon import jobs
from tests import rows


def test_known_error_codes_become_the_enum_and_unknown_ones_stay_text() -> None:
    """A code of this version is an ErrorCode; one written by another version does not break a listing."""
    assert rows.job(error_code="worker_lost").error_code is jobs.ErrorCode.WORKER_LOST
    assert rows.job(error_code="E_FROM_ELSEWHERE").error_code == "E_FROM_ELSEWHERE"
    assert rows.job().error_code is None


def test_json_columns_read_the_same_with_or_without_the_pools_codec() -> None:
    """options, timings and words decode alike from a dict (the pool's codec) and from JSON text (a bare
    connection); the options keep what was stored for the API to show."""
    stored = {"task": "translate", "word_timestamps": True, "future_option": 1}
    word = {"start": 0.0, "end": 0.5, "word": " hi", "probability": 0.9}
    a = rows.job(options=stored, timings={"transcribe_s": 1.5})
    b = rows.job(options=json.dumps(stored), timings=json.dumps({"transcribe_s": 1.5}))
    assert a == b
    assert a.options.task is jobs.Task.TRANSLATE and a.options.word_timestamps
    assert a.options_json == stored and a.timings == {"transcribe_s": 1.5}
    assert rows.segment(words=[word]).words == rows.segment(words=json.dumps([word])).words == (word,)
    assert rows.segment(tokens=None).tokens == ()


def test_columns_keep_the_tables_order_for_the_cli() -> None:
    """`asrctl jobs show` lists every column in the table's order, options as stored."""
    cols = rows.job(options={"task": "transcribe"}).columns()
    assert list(cols)[:4] == ["id", "status", "model", "options"]
    assert list(cols)[-2:] == ["api_key_id", "kind"]
    assert cols["options"] == {"task": "transcribe"}


#: `jobs.options` of a diarized job as the code before `jobs.DiarizationOptions` wrote it (a plain dict)
OLD_DIARIZED = {
    "task": "transcribe",
    "language": "en",
    "prompt": None,
    "temperature": None,
    "word_timestamps": True,
    "vad_filter": False,
    "beam_size": None,
    "diarization": {
        "num_speakers": None,
        "min_speakers": 2,
        "max_speakers": 3,
        "only": False,
        "known": [{"name": "Ann", "embedding": "AAA="}, {"name": "Bo", "embedding": "AQE="}],
    },
}


def _old_fingerprint(options: dict[str, object], model: str, audio: str) -> str:
    """The deduplication key as the dict-based code computed it."""
    blob = json.dumps([audio, model, options], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def test_an_old_diarized_row_loads_into_typed_speaker_options() -> None:
    """A row the dict-based code stored reads as `DiarizationOptions` (attributes, known speakers typed)."""
    job = rows.job(options=json.dumps(OLD_DIARIZED))
    spk = job.options.diarization
    assert isinstance(spk, jobs.DiarizationOptions) and job.diarized
    assert (spk.num_speakers, spk.min_speakers, spk.max_speakers, spk.only) == (None, 2, 3, False)
    assert spk.known == (jobs.KnownSpeaker("Ann", embedding="AAA="), jobs.KnownSpeaker("Bo", embedding="AQE="))
    assert rows.job(options={**OLD_DIARIZED, "diarization": None}).options.diarization is None
    assert not rows.job(options={"task": "transcribe"}).diarized


def test_typed_speaker_options_write_the_keys_old_rows_hold() -> None:
    """`to_json` gives back exactly what the old code stored, so old jobs still deduplicate against new ones."""
    opts = jobs.Options.from_json(OLD_DIARIZED)
    assert opts.to_json() == OLD_DIARIZED
    assert opts.fingerprint("tiny.en", "a" * 64) == _old_fingerprint(OLD_DIARIZED, "tiny.en", "a" * 64)
    plain = {
        **OLD_DIARIZED,
        "diarization": {"num_speakers": 2, "min_speakers": None, "max_speakers": None, "only": True},
    }
    assert jobs.Options.from_json(plain).to_json() == plain  # no `known` key without known speakers


def test_speaker_options_from_another_version_load_with_defaults() -> None:
    """Missing keys take their defaults, unknown keys and malformed entries are ignored, never an error."""
    assert jobs.DiarizationOptions.from_json({}) == jobs.DiarizationOptions()
    odd = jobs.DiarizationOptions.from_json(
        {"num_speakers": 2.0, "min_speakers": "3", "only": 1, "known": [{"name": "A"}, "junk"], "future": {}}
    )
    assert odd == jobs.DiarizationOptions(num_speakers=2, known=(jobs.KnownSpeaker("A"),))
    assert jobs.DiarizationOptions.from_json({"known": "junk"}).known == ()
