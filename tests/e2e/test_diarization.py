"""Speaker diarization through the real daemon: two espeak-ng voices, the real offline encoder, tiny.en."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench import dialogue as dialogue_clip
from tests.conftest import CACHE, Daemon, leftover_files
from tests.media import silence

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dialogue() -> tuple[Path, list[tuple[float, float, str]]]:
    """Six alternating lines by two espeak-ng voices (A: en-us male; B: en+f3, higher and faster)."""
    return dialogue_clip.dialogue(CACHE / "speech")


@pytest.fixture(scope="module")
def ddaemon(make_module_daemon: Callable[..., Daemon], diarization_models: Path) -> Daemon:
    """One daemon for the module, with the diarization encoder installed in its models directory."""
    return make_module_daemon()


def _speaker_at(reference: list[tuple[float, float, str]], t: float) -> str | None:
    return next((spk for s, e, spk in reference if s <= t <= e), None)


def test_openai_client_gets_diarized_json(ddaemon: Daemon, dialogue: tuple[Path, list]) -> None:
    """The official openai client's diarized_json: two speakers A, B alternating as the lines do."""
    from openai import OpenAI

    path, reference = dialogue
    client = OpenAI(base_url=ddaemon.url + "/v1", api_key="x", timeout=300)
    out = client.audio.transcriptions.create(model="tiny.en", file=path.open("rb"), response_format="diarized_json")
    assert out.text and out.duration > 20
    speakers = [s.speaker for s in out.segments]
    assert set(speakers) == {"A", "B"}, speakers
    assert speakers[0] == "A"
    agree = [s for s in out.segments if _speaker_at(reference, (s.start + s.end) / 2) == s.speaker]
    assert len(agree) >= 0.8 * len(out.segments), [(s.start, s.end, s.speaker) for s in out.segments]
    assert all(s.type == "transcript.text.segment" for s in out.segments)
    verbose = client.audio.transcriptions.create(
        model="tiny.en",
        file=path.open("rb"),
        response_format="verbose_json",
        extra_body={"diarize": True, "num_speakers": 2},
    )
    assert verbose.segments and {getattr(s, "speaker", None) for s in verbose.segments} == {"A", "B"}


def test_every_format_names_speakers(ddaemon: Daemon, dialogue: tuple[Path, list]) -> None:
    """verbose_json (segments and words), vtt voice tags, srt and text prefixes all carry the speaker."""
    path, reference = dialogue
    with ddaemon.client(timeout=300) as c:
        r = c.post(
            "/v1/jobs",
            files={"file": path.open("rb")},
            data={"diarize": "true", "timestamp_granularities[]": "word", "model": "tiny.en"},
        )
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        events = c.get(f"/v1/jobs/{job}/events", timeout=300).text
        verbose = c.get(f"/v1/jobs/{job}/transcript", params={"format": "verbose_json"}).json()
        vtt = c.get(f"/v1/jobs/{job}/transcript", params={"format": "vtt"}).text
        srt = c.get(f"/v1/jobs/{job}/transcript", params={"format": "srt"}).text
        text = c.get(f"/v1/jobs/{job}/transcript", params={"format": "text"}).text
        shown = c.get(f"/v1/jobs/{job}").json()
    assert "event: diarization" in events
    segment_events = [json.loads(line[6:]) for line in events.splitlines() if line.startswith('data: {"id"')]
    assert any(e.get("speaker") in {"A", "B"} for e in segment_events)
    assert all(e["speaker_label"] == e["speaker"] for e in segment_events if "speaker" in e)  # unnamed: the label
    assert {s["speaker"] for s in verbose["segments"]} == {"A", "B"}
    assert all(s["speaker_label"] == s["speaker"] for s in verbose["segments"])
    assert all(w["speaker"] in {"A", "B"} for w in verbose["words"])
    right = sum(_speaker_at(reference, (w["start"] + w["end"]) / 2) == w["speaker"] for w in verbose["words"])
    assert right >= 0.8 * len(verbose["words"])
    assert "<v A>" in vtt and "<v B>" in vtt
    assert re.search(r"^A: ", srt, re.MULTILINE) and re.search(r"^B: ", srt, re.MULTILINE)
    assert text.startswith("A: ") and "\nB: " in text
    assert shown["timings"]["diarize_s"] > 0


def test_diarization_endpoint_json_rttm_and_rename(ddaemon: Daemon, dialogue: tuple[Path, list]) -> None:
    """POST /v1/audio/diarization gives turns as json and rttm; PATCH speakers renames them everywhere."""
    path, _ = dialogue
    with ddaemon.client(timeout=300) as c:
        r = c.post("/v1/audio/diarization", files={"file": path.open("rb")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["num_speakers"] == 2 and body["duration"] > 20
        assert [s["speaker"] for s in body["segments"]][:2] == ["A", "B"]
        rttm = c.post("/v1/audio/diarization", files={"file": path.open("rb")}, data={"response_format": "rttm"})
        lines = rttm.text.splitlines()
        assert lines and all(line.startswith("SPEAKER ") and len(line.split()) == 10 for line in lines)
        one = c.post("/v1/audio/diarization", files={"file": path.open("rb")}, data={"num_speakers": "1"}).json()
        assert one["num_speakers"] == 1
        job = r.headers["x-job-id"]
        renamed = c.patch(f"/v1/jobs/{job}/speakers", json={"A": "Alice", "B": "Bob"})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["speakers"] == {"A": "Alice", "B": "Bob"}
        again = c.get(f"/v1/jobs/{job}/transcript").json()
        assert {s["speaker"] for s in again["segments"]} == {"Alice", "Bob"}
        assert c.patch(f"/v1/jobs/{job}/speakers", json={"Z": "Zed"}).status_code == 400
        assert c.patch(f"/v1/jobs/{job}/speakers", json=["A"]).status_code == 400
        assert c.patch(f"/v1/jobs/{job}/speakers", content=b"{not json").status_code == 400
        assert c.patch(f"/v1/jobs/{job}/speakers", json={"A": "Al\x00ice"}).status_code == 400  # not a 500
        same = c.patch(f"/v1/jobs/{job}/speakers", json={"A": "bob"})  # two speakers shown as one
        assert same.status_code == 400 and "A and B would both be shown as" in same.json()["error"]["message"]
        assert c.patch(f"/v1/jobs/{job}/speakers", json={"B": None, "A": "B"}).status_code == 400  # B's label
        swap = c.patch(f"/v1/jobs/{job}/speakers", json={"A": "Bob", "B": "Alice\n\nSmith"})
        assert swap.status_code == 200 and swap.json()["speakers"] == {"A": "Bob", "B": "Alice Smith"}
        plain = c.post("/v1/audio/transcriptions", files={"file": path.open("rb")}, data={"model": "tiny.en"})
        assert c.patch(f"/v1/jobs/{plain.headers['x-job-id']}/speakers", json={"A": "x"}).status_code == 409


def _data_url(path: Path) -> str:
    return "data:audio/flac;base64," + base64.b64encode(path.read_bytes()).decode()


def test_known_speaker_references_name_the_speakers(
    ddaemon: Daemon, dialogue: tuple[Path, list], speech: Callable[..., Path]
) -> None:
    """A reference sample of voice B (a sentence not in the clip) names B's turns; A keeps its label."""
    path, _ = dialogue
    ref = CACHE / "speech" / "voice-b-reference.flac"
    if not ref.exists():
        raw = ref.with_suffix(".raw.wav")
        voice, pitch, speed = dialogue_clip.VOICES["B"]
        text = "Here is a short sample of my voice, recorded for the meeting notes today."
        subprocess.run(["espeak-ng", "-v", voice, "-p", pitch, "-s", speed, "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-R", str(raw), "-r", "16000", "-c", "1", str(ref)], check=True)
        raw.unlink()
    with ddaemon.client(timeout=300) as c:
        r = c.post(
            "/v1/audio/transcriptions",
            files={"file": path.open("rb")},
            data={
                "model": "tiny.en",
                "response_format": "diarized_json",
                "known_speaker_names[]": "Beatrice",
                "known_speaker_references[]": _data_url(ref),
            },
        )
    assert r.status_code == 200, r.text
    assert {s["speaker"] for s in r.json()["segments"]} == {"A", "Beatrice"}


def _post(c: httpx.Client, path: Path, data: dict[str, str], url: str = "/v1/audio/diarization") -> httpx.Response:
    return c.post(url, files={"file": path.open("rb")}, data=data)


def test_bad_input_is_refused_or_answered(ddaemon: Daemon, speech: Callable[..., Path], tmp_path: Path) -> None:
    """Silence, 1 s of audio, one voice, silly counts and bad references: a 4xx or a correct answer, never 5xx."""
    quiet = silence(tmp_path / "quiet.flac", 5, rate=16000)
    short = speech("Hello.")
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("these are not sounds " * 50)
    long_ref = silence(tmp_path / "long.flac", 30, rate=16000)
    with ddaemon.client(timeout=300) as c:
        r = _post(c, quiet, {})
        assert r.status_code == 200 and r.json()["num_speakers"] == 0 and r.json()["segments"] == []
        r = _post(c, quiet, {"response_format": "diarized_json", "model": "tiny.en"}, "/v1/audio/transcriptions")
        # Whisper may still hear something in silence; nobody is speaking it
        assert r.status_code == 200 and all(s["speaker"] == "" for s in r.json()["segments"])
        r = _post(c, short, {})
        assert r.status_code == 200 and r.json()["num_speakers"] <= 1, r.text
        for bad in (
            {"num_speakers": "0"},
            {"num_speakers": "1000"},
            {"num_speakers": "two"},
            {"min_speakers": "3", "max_speakers": "2"},
            {"num_speakers": "5", "max_speakers": "2"},
            {"diarize": "maybe"},
            {"known_speaker_names[]": "X"},
            {"known_speaker_names[]": "X", "known_speaker_references[]": "not a data url"},
            {"known_speaker_names[]": "X", "known_speaker_references[]": "data:audio/wav;base64,@@@"},
            {"known_speaker_names[]": "X", "known_speaker_references[]": _data_url(not_audio)},
            {"known_speaker_names[]": "X", "known_speaker_references[]": _data_url(long_ref)},
            {"known_speaker_names[]": "X", "known_speaker_references[]": "data:text/plain;base64,aGVsbG8="},
        ):
            r = _post(c, short, bad)
            assert r.status_code == 400, (bad, r.status_code, r.text)
            assert r.json()["error"]["message"]
        r = _post(c, short, {"num_speakers": "2"}, "/v1/audio/transcriptions")
        assert r.status_code == 400, "num_speakers without diarize"
        plain = _post(c, short, {"model": "tiny.en"}, "/v1/audio/transcriptions")
        job = plain.headers["x-job-id"]
        assert c.get(f"/v1/jobs/{job}/transcript", params={"format": "diarized_json"}).status_code == 409
    assert leftover_files(ddaemon.state_dir) == []


def test_cli_transcribe_diarize_and_jobs_show(
    ddaemon: Daemon, dialogue: tuple[Path, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`asrctl transcribe --diarize` prints `A:`/`B:` lines; `asrctl jobs show` lists the speakers and their time."""
    from asr_daemon.ops import host
    from tests.integration.ops_support import asrctl

    for key, value in ddaemon.env.items():
        if key.startswith("ASR_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("ASR_URL", raising=False)
    monkeypatch.setattr(host, "systemd_present", lambda: False)
    path, _ = dialogue
    out = asrctl("transcribe", str(path), "--diarize", "--model", "tiny.en")
    assert out.exit_code == 0, out.stderr
    assert out.stdout.startswith("A: ") and "\nB: " in out.stdout
    queued = asrctl("transcribe", str(path), "--diarize", "--speakers", "2", "--model", "tiny.en", "--async")
    job_id = queued.stdout.split("\t")[0]
    with ddaemon.client(timeout=300) as c:
        c.get(f"/v1/jobs/{job_id}/events", timeout=300)
        api = c.get(f"/v1/jobs/{job_id}").json()
    assert api["speakers"]["num_speakers"] == 2
    shown = json.loads(asrctl("jobs", "show", job_id, "--json").stdout)
    assert [s["label"] for s in shown["speakers"]["speakers"]] == ["A", "B"]
    table = asrctl("jobs", "show", job_id).stdout
    assert "speakers" in table and "A " in table


async def _fetch(database: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _until(database: str, sql: str, job_id: str, timeout: float = 120) -> list[asyncpg.Record]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await _fetch(database, sql, job_id)
        if rows:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


async def test_kill_9_during_and_after_diarization_resumes_without_redoing_it(
    make_daemon: Callable[..., Daemon], diarization_models: Path, two_minutes: Path, database: str
) -> None:
    """kill -9 while diarizing reruns the step; kill -9 while transcribing keeps the stored turns (not redone)."""
    from tests.e2e.test_jobs import wait_status

    daemon = make_daemon(ASR_WINDOW_SECONDS="30")
    with daemon.client() as c:
        r = c.post("/v1/jobs", files={"file": two_minutes.open("rb")}, data={"diarize": "true", "model": "tiny.en"})
        job_id = r.json()["id"]
    await _until(database, "SELECT 1 FROM diarizations WHERE job_id = $1::uuid AND status = 'running'", job_id)
    daemon.stop(signal.SIGKILL)
    daemon.start()
    await _until(database, "SELECT 1 FROM segments WHERE job_id = $1::uuid", job_id, timeout=240)
    turns = await _fetch(database, "SELECT * FROM diarization_turns WHERE job_id = $1::uuid ORDER BY seq", job_id)
    step = (await _fetch(database, "SELECT * FROM diarizations WHERE job_id = $1::uuid", job_id))[0]
    assert step["status"] == "done" and turns
    daemon.stop(signal.SIGKILL)
    daemon.start()
    with daemon.client() as c:
        job = wait_status(c, job_id, {"completed", "failed"}, timeout=240)
    assert job["status"] == "completed" and job["attempts"] == 3
    after = await _fetch(database, "SELECT * FROM diarization_turns WHERE job_id = $1::uuid ORDER BY seq", job_id)
    again = (await _fetch(database, "SELECT * FROM diarizations WHERE job_id = $1::uuid", job_id))[0]
    assert [tuple(r) for r in after] == [tuple(r) for r in turns]
    assert again["updated_at"] == step["updated_at"], "the finished step was run again"
    assert '"diarization_reused"' in daemon.logs()


async def test_cancel_while_diarizing_leaves_no_turns(
    make_daemon: Callable[..., Daemon], diarization_models: Path, two_minutes: Path, database: str
) -> None:
    """DELETE /v1/jobs/{id} during the diarization step cancels the job at once, stores no turns, and the
    job's speakers no longer say the step runs."""
    daemon = make_daemon()
    with daemon.client() as c:
        r = c.post("/v1/jobs", files={"file": two_minutes.open("rb")}, data={"diarize": "true", "model": "tiny.en"})
        job_id = r.json()["id"]
        await _until(database, "SELECT 1 FROM diarizations WHERE job_id = $1::uuid AND status = 'running'", job_id)
        t0 = time.monotonic()
        cancelled = c.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert time.monotonic() - t0 < 5
    await asyncio.sleep(3)
    assert await _fetch(database, "SELECT 1 FROM diarization_turns WHERE job_id = $1::uuid", job_id) == []
    assert await _fetch(database, "SELECT 1 FROM segments WHERE job_id = $1::uuid", job_id) == []
    with daemon.client() as c:
        speakers = c.get(f"/v1/jobs/{job_id}").json()["speakers"]
    assert speakers is None or speakers["status"] == "stopped", speakers  # not "running" for ever


def test_webhook_names_the_speakers(
    make_daemon: Callable[..., Daemon], diarization_models: Path, dialogue: tuple[Path, list]
) -> None:
    """A diarized job's webhook carries its speakers (label, name, seconds of speech), signed as always."""
    import http.server
    import threading

    from asr_daemon.pipeline import webhooks

    bodies: list[bytes] = []
    headers: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            headers.append(self.headers["X-Asr-Signature"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        daemon = make_daemon(ASR_WEBHOOK_SECRET="s3cret")
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        with daemon.client(timeout=300) as c:
            r = c.post("/v1/audio/diarization", files={"file": dialogue[0].open("rb")}, data={"webhook_url": url})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 60
        while not bodies and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
    assert bodies and webhooks.verify("s3cret", headers[0], bodies[0])
    payload = json.loads(bodies[0])
    assert payload["type"] == "job.completed"
    assert [s["label"] for s in payload["speakers"]] == ["A", "B"]
    assert all(s["seconds"] > 5 for s in payload["speakers"])


def test_audio_that_lied_about_its_length_fails_its_diarization(
    make_daemon: Callable[..., Daemon], diarization_models: Path, speech: Callable[..., Path], tmp_path: Path
) -> None:
    """A file whose container claims a twentieth of its length (so it passes ASR_MAX_AUDIO_SECONDS) is
    diarized no further than transcription would read it: a 4xx saying so, no turns past the bound."""
    from tests import media
    from tests.conftest import STORY

    one = speech(STORY[2])
    long = tmp_path / "long.flac"
    subprocess.run(["sox", *[str(one)] * 12, str(long)], check=True)
    lying = media.lying_middle(long, tmp_path / "lying.mka")
    d = make_daemon(ASR_MAX_AUDIO_SECONDS="60")
    with d.client(timeout=300) as c:
        r = c.post("/v1/audio/diarization", files={"file": lying.open("rb")})
        assert 400 <= r.status_code < 500, r.text
        assert "decodes to more than" in r.json()["error"]["message"]
        job = c.get(f"/v1/jobs/{r.json()['error']['job_id']}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "transcription_failed", job


def test_diarization_alone_needs_no_whisper_model(ddaemon: Daemon, dialogue: tuple[Path, list]) -> None:
    """/v1/audio/diarization loads no Whisper model, so a model this host lacks (named, or the default
    missing) is no reason to refuse it; a transcription naming that model still is."""
    path, _ = dialogue
    with ddaemon.client(timeout=300) as c:
        r = c.post("/v1/audio/diarization", files={"file": path.open("rb")}, data={"model": "large-v3"})
        assert r.status_code == 200, r.text
        assert r.json()["num_speakers"] >= 1
        t = c.post("/v1/audio/transcriptions", files={"file": path.open("rb")}, data={"model": "large-v3"})
        assert t.status_code == 404 and t.json()["error"]["code"] == "model_not_found"
