"""`asrctl transcribe` and `asrctl status` against the real daemon (Granian, tiny.en, PostgreSQL, Redis)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from asr_daemon.cli.common import human_size
from asr_daemon.ops import host
from tests import services
from tests.conftest import Daemon
from tests.integration.ops_support import MODEL, READYZ, asrctl, assert_one_error_line


@pytest.fixture
def cli_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """The CLI configured like the running daemon (same database, Redis, state, port), no systemd."""
    for key, value in daemon.env.items():
        if key.startswith("ASR_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("ASR_URL", raising=False)
    monkeypatch.setattr(host, "systemd_present", lambda: False)
    return daemon


def test_transcribe_writes_the_transcript(cli_env: Daemon, jfk: Path, tmp_path: Path) -> None:
    """transcribe submits, follows the events to the end and writes <stem>.srt into --output."""
    out = tmp_path / "out"
    result = asrctl("transcribe", str(jfk), "--format", "srt", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    srt = (out / f"{jfk.stem}.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> ") and "country" in srt.lower()
    to_stdout = asrctl("transcribe", str(jfk), "--language", "en")
    assert to_stdout.exit_code == 0 and "fellow americans" in to_stdout.stdout.lower()


def test_transcribe_async_prints_ids(cli_env: Daemon, jfk: Path, tmp_path: Path) -> None:
    """--async prints one job id per file and returns (the job is in the database); a bad file, one error line."""
    # a file the daemon cannot decode gives one error line
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 100)
    assert_one_error_line(asrctl("transcribe", str(junk)), "HTTP 4")
    result = asrctl("transcribe", "--async", str(jfk))
    assert result.exit_code == 0, result.stderr
    job_id, name = result.stdout.strip().split("\t")
    assert name == str(jfk) and uuid.UUID(job_id)
    shown = json.loads(asrctl("jobs", "show", job_id, "--json").stdout)
    assert shown["id"] == job_id and shown["filename"] == jfk.name


def test_status_with_the_daemon_up(cli_env: Daemon, jfk: Path) -> None:
    """status reports the real daemon answering and ready, its device, the loaded model with the memory
    it took, the database and queue; the status tests' stub answers with exactly the real keys."""
    with cli_env.client() as c:
        assert c.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")}).status_code == 200
        readyz, listed = c.get("/readyz").json(), c.get("/v1/models").json()["data"]
    assert set(readyz) == set(READYZ) and set(readyz["device"]) == set(READYZ["device"])
    assert all(set(m) == set(MODEL) for m in listed)
    result = asrctl("status", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["daemon"]["state"] == "answering" and report["daemon"]["ready"] is True
    assert report["daemon"]["via"] == cli_env.url
    assert report["database"]["reachable"] and report["jobs"]["queued"] == 0
    dev = report["device"]["daemon"]
    expected = "cuda" if report["device"]["gpus"] else "cpu"  # the test daemon runs ASR_DEVICE=auto
    assert report["device"]["source"] == "daemon" and dev["kind"] == expected and dev["compute_type"]
    assert (dev["gpu"] is not None) == (expected == "cuda") and dev["cpu_fallback"] is False
    loaded = [m for m in report["daemon"]["models"] if m["loaded"]]
    assert [m["id"] for m in loaded] == ["tiny.en"] and loaded[0]["device"] == expected
    assert 0 < loaded[0]["memory_bytes"] < 4 << 30
    screen = " ".join(asrctl("status").stdout.split())
    assert f"tiny.en ({expected} {dev['compute_type']}, {human_size(loaded[0]['memory_bytes'])} in memory)" in screen
    assert f"device {expected} {dev['compute_type']}" in screen


def test_transcribe_error_paths(jfk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemon down or a missing file: one error line and a non-zero exit, nothing else."""
    monkeypatch.setenv("ASR_PORT", str(services.free_port()))
    monkeypatch.delenv("ASR_URL", raising=False)
    assert_one_error_line(asrctl("transcribe", str(jfk)), "cannot reach the daemon")
    assert_one_error_line(asrctl("transcribe", str(jfk), str(tmp_path / "missing.wav")), "no such file")
    assert_one_error_line(asrctl("transcribe", str(jfk), "--format", "doc"), "--format")


def test_transcribe_checks_its_output_before_submitting(
    jfk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o naming a file, a path under a file, or a target that is a directory: one error line before
    anything is submitted (the daemon is not even asked: here it is down), nothing created."""
    monkeypatch.setenv("ASR_PORT", str(services.free_port()))
    monkeypatch.delenv("ASR_URL", raising=False)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    (tmp_path / "out" / f"{jfk.stem}.srt").mkdir(parents=True)
    cases = [
        ("/etc/passwd", "--output /etc/passwd: not a directory"),
        (str(a_file), f"--output {a_file}: not a directory"),
        (str(a_file / "sub"), f"--output {a_file / 'sub'}: {a_file} is not a directory"),
        (str(tmp_path / "out"), f"{jfk.stem}.srt there is a directory"),
    ]
    for output, message in cases:
        assert_one_error_line(asrctl("transcribe", str(jfk), "--format", "srt", "-o", output), message)
    assert a_file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "out"]
    assert_one_error_line(asrctl("transcribe", str(jfk), "-o", str(tmp_path / "new" / "dir")), "cannot reach")
    assert not (tmp_path / "new").exists()
