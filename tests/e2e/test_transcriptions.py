"""The OpenAI-compatible endpoints against the real daemon under Granian, PostgreSQL and Redis."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from faster_whisper import WhisperModel

from tests.conftest import Daemon, leftover_files


def words(text: str) -> str:
    """Lower-case, punctuation stripped, spaces collapsed (how transcripts are compared)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def test_transcription_matches_faster_whisper_called_directly(daemon: Daemon, jfk: Path, models_dir: Path) -> None:
    """The daemon's text equals what faster-whisper returns for the same audio, model and options."""
    with daemon.client() as c:
        r = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")})
    assert r.status_code == 200, r.text
    model = WhisperModel(str(models_dir / "tiny.en"), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(str(jfk))
    assert r.json()["text"] == "".join(s.text for s in segments).strip()
    assert "fellow americans" in words(r.json()["text"])


@pytest.mark.parametrize(
    ("form", "direct"),
    [
        # each changes tiny.en's output for this clip, so an option dropped on the way would show
        ({"prompt": "AND SO, MY FELLOW AMERICANS!"}, {"initial_prompt": "AND SO, MY FELLOW AMERICANS!"}),
        (
            {"temperature": "0", "beam_size": "1", "language": "en"},
            {"temperature": 0.0, "beam_size": 1, "language": "en"},
        ),
    ],
    ids=["prompt", "temperature-beam-language"],
)
def test_options_reach_faster_whisper(
    daemon: Daemon, jfk: Path, models_dir: Path, form: dict[str, str], direct: dict[str, object]
) -> None:
    """prompt, temperature, beam_size and language give exactly faster-whisper's output with the same arguments."""
    with daemon.client() as c:
        r = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data=form)
    assert r.status_code == 200, r.text
    model = WhisperModel(str(models_dir / "tiny.en"), device="cpu", compute_type="int8")
    with_options = "".join(s.text for s in model.transcribe(str(jfk), **direct)[0]).strip()  # type: ignore[arg-type]
    without = "".join(s.text for s in model.transcribe(str(jfk))[0]).strip()
    assert with_options != without, "these options no longer change the output: pick others"
    assert r.json()["text"] == with_options


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("text", lambda body: "country" in body.lower() and not body.startswith("{")),
        ("srt", lambda body: body.startswith("1\n00:00:00,000 --> ")),
        ("vtt", lambda body: body.startswith("WEBVTT\n\n00:00:00.000 --> ")),
        ("json", lambda body: "country" in json.loads(body)["text"].lower()),
    ],
)
def test_each_response_format_renders(daemon: Daemon, jfk: Path, fmt: str, check: object) -> None:
    """Every response_format gives its own shape of the same transcript."""
    with daemon.client() as c:
        r = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data={"response_format": fmt})
    assert r.status_code == 200, r.text
    assert check(r.text)  # type: ignore[operator]


def test_verbose_json_carries_language_duration_segments_and_words(daemon: Daemon, jfk: Path) -> None:
    """verbose_json has language, duration and segments, and words when word granularity is asked."""
    with daemon.client() as c:
        r = c.post(
            "/v1/audio/transcriptions",
            files={"file": jfk.open("rb")},
            data={"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
        )
    body = r.json()
    assert body["language"] == "en"
    assert 4 < body["duration"] < 10
    assert body["segments"] and body["segments"][0]["start"] == 0.0
    assert [w["word"].strip().lower() for w in body["words"]][:2] == ["and", "so"]
    assert all(w["start"] <= w["end"] for w in body["words"])


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # openai marks translations deprecated
def test_openai_client_transcribes_and_translates(daemon: Daemon, jfk: Path) -> None:
    """The official openai client works against both endpoints."""
    from openai import OpenAI

    client = OpenAI(base_url=daemon.url + "/v1", api_key="x")
    text = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"))
    assert "fellow americans" in words(text.text)
    verbose = client.audio.transcriptions.create(model="tiny.en", file=jfk.open("rb"), response_format="verbose_json")
    assert verbose.language == "en" and verbose.segments
    translated = client.audio.translations.create(model="tiny.en", file=jfk.open("rb"))
    assert "country" in words(translated.text)


def test_openai_clients_chunking_strategy_reaches_the_vad(daemon: Daemon, jfk: Path) -> None:
    """The SDK's `chunking_strategy` object is accepted and its threshold used: at 1.0 the VAD hears no
    speech at all (an empty transcript); `auto` and a usual threshold transcribe."""
    from openai import OpenAI

    client = OpenAI(base_url=daemon.url + "/v1", api_key="x")
    strict = client.audio.transcriptions.create(
        model="tiny.en", file=jfk.open("rb"), chunking_strategy={"type": "server_vad", "threshold": 1.0}
    )
    usual = client.audio.transcriptions.create(
        model="tiny.en", file=jfk.open("rb"), chunking_strategy={"type": "server_vad", "threshold": 0.5}
    )
    auto = client.audio.transcriptions.create(model="tiny.en", file=jfk.open("rb"), chunking_strategy="auto")
    assert strict.text.strip() == ""
    assert "fellow americans" in words(usual.text) and "fellow americans" in words(auto.text)


def test_a_language_an_english_only_model_cannot_transcribe_is_a_400_and_no_job(daemon: Daemon, jfk: Path) -> None:
    """`language=de` with tiny.en is refused naming base (not silently transcribed as English), and stores nothing."""
    with daemon.client() as c:
        before = len(c.get("/v1/jobs", params={"limit": 200}).json()["data"])
        r = c.post(
            "/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data={"model": "tiny.en", "language": "de"}
        )
        after = len(c.get("/v1/jobs", params={"limit": 200}).json()["data"])
    assert r.status_code == 400, r.text
    assert "English only" in r.json()["error"]["message"] and "'base'" in r.json()["error"]["message"]
    assert after == before


def test_translation_turns_other_languages_into_english(daemon: Daemon, speech: object) -> None:
    """/v1/audio/translations with the multilingual base model gives English text for German speech."""
    german = speech("Guten Morgen. Das Wetter ist heute sehr schön und die Sonne scheint.", voice="de")  # type: ignore[operator]
    with daemon.client() as c:
        t = c.post(
            "/v1/audio/transcriptions",
            files={"file": german.open("rb")},
            data={"model": "base", "response_format": "verbose_json"},
        )
        e = c.post("/v1/audio/translations", files={"file": german.open("rb")}, data={"model": "base"})
    assert t.json()["language"] == "de"
    english = words(e.json()["text"])
    assert any(w in english.split() for w in ("morning", "weather", "sun", "today")), english


async def test_every_transcription_is_a_stored_job(daemon: Daemon, jfk: Path, database: str) -> None:
    """A transcription leaves a completed job row with its segments; the transcript re-renders the same."""
    with daemon.client() as c:
        r = c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}, data={"response_format": "text"})
        job_id = r.headers["x-job-id"]
        again = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"})
        job = c.get(f"/v1/jobs/{job_id}").json()
    assert again.text == r.text
    assert job["status"] == "completed" and job["audio"]["duration_s"] > 4
    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow("SELECT status, audio_sha256, model FROM jobs WHERE id = $1::uuid", job_id)
        n = await conn.fetchval("SELECT count(*) FROM segments WHERE job_id = $1::uuid", job_id)
    finally:
        await conn.close()
    assert row["status"] == "completed" and row["model"] == "tiny.en" and n >= 1
    assert (daemon.state_dir / "uploads" / row["audio_sha256"]).is_file()


FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def test_every_format_renders_again_from_the_database_as_the_synchronous_answer_did(
    make_daemon: Callable[..., Daemon], jfk: Path
) -> None:
    """GET /v1/jobs/{id}/transcript?format=F equals, byte for byte, what the synchronous call answered in F."""
    d = make_daemon(ASR_DEDUP="false")  # a fresh job per format: no answer comes from another job
    granularities = {"timestamp_granularities[]": ["word", "segment"]}
    answers = {}
    with d.client() as c:
        for fmt in FORMATS:
            r = c.post(
                "/v1/audio/transcriptions",
                files={"file": jfk.open("rb")},
                data={"response_format": fmt, **granularities},
            )
            assert r.status_code == 200, r.text
            again = c.get(f"/v1/jobs/{r.headers['x-job-id']}/transcript", params={"format": fmt})
            assert again.status_code == 200, again.text
            assert again.headers["content-type"] == r.headers["content-type"], fmt
            assert again.text == r.text, fmt
            assert again.headers["x-job-id"] == r.headers["x-job-id"]
            answers[fmt] = r
    assert len({r.headers["x-job-id"] for r in answers.values()}) == len(FORMATS)
    text = answers["json"].json()["text"]
    assert "country" in text.lower() and answers["text"].text == text + "\n"
    verbose = answers["verbose_json"].json()
    assert verbose["text"] == text and verbose["words"] and verbose["segments"]
    assert answers["srt"].text.startswith("1\n00:00:00,000 --> ")
    assert answers["vtt"].text.startswith("WEBVTT\n\n00:00:00.000 --> ")
    types = {f: r.headers["content-type"] for f, r in answers.items()}
    assert types == {  # one charset each (Litestar adds it to text/ types: the table must not)
        "json": "application/json",
        "text": "text/plain; charset=utf-8",
        "srt": "application/x-subrip; charset=utf-8",
        "vtt": "text/vtt; charset=utf-8",
        "verbose_json": "application/json",
    }


def test_a_translation_in_srt_is_rendered_again_from_the_database(daemon: Daemon, jfk: Path) -> None:
    """/v1/audio/translations with response_format=srt answers SRT, and its job renders the same SRT again."""
    with daemon.client() as c:
        r = c.post("/v1/audio/translations", files={"file": jfk.open("rb")}, data={"response_format": "srt"})
        assert r.status_code == 200, r.text
        job_id = r.headers["x-job-id"]
        again = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "srt"})
        verbose = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()
    assert r.headers["content-type"].startswith("application/x-subrip")
    assert r.text.startswith("1\n00:00:00,000 --> ") and "country" in words(r.text)
    assert again.text == r.text and again.headers["content-type"] == r.headers["content-type"]
    assert verbose["task"] == "translate"


def test_health_answers_while_a_transcription_runs(daemon: Daemon, speech: object) -> None:
    """Inference runs off the event loop: /healthz answers in well under a second mid-transcription."""
    import threading
    import time

    import httpx

    long = speech("The quick brown fox jumps over the lazy dog. " * 6, repeat=3)  # type: ignore[operator]
    result: dict[str, int] = {}

    def post() -> None:
        with daemon.client() as c:
            result["status"] = c.post("/v1/audio/transcriptions", files={"file": long.open("rb")}).status_code

    t = threading.Thread(target=post)
    t.start()
    with daemon.client() as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not c.get("/v1/jobs", params={"status": "running"}).json()["data"]:
            time.sleep(0.02)
        t0 = time.monotonic()
        assert httpx.get(daemon.url + "/healthz", timeout=5).status_code == 200
        latency = time.monotonic() - t0
        assert c.get("/v1/jobs", params={"status": "running"}).json()["data"], "the job finished too early"
    t.join()
    assert result["status"] == 200
    assert latency < 0.5
    assert not leftover_files(daemon.state_dir)
