"""The typed job rows: built from a record the way every query builds them, tolerant of what other
versions may have stored."""

from __future__ import annotations

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
