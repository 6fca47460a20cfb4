"""Long live utterances with a session prompt, against the real daemon under Granian with tiny.en: their final
decode fits Whisper's 448-token context, so their text reaches the client and the job (faster-whisper refused
such decodes with a ValueError and the job was completed without the utterance)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import live
from tests.conftest import STORY, Daemon
from tests.e2e.test_live import job_of, words
from tests.unit.test_live_budget import GLOSSARY

#: A 400-character prompt: about 130 tokens, with which a 28 s utterance's old cap (360) overflowed.
VOCABULARY = ("Vocabulary: " + ", ".join(f"Term{i}" for i in range(80)))[:400]
DONE = ("conversation.item.input_audio_transcription.completed", "conversation.item.input_audio_transcription.failed")


def finals(conn: Any, count: int, timeout: float = 120) -> list[dict[str, Any]]:
    """The next `count` completed / failed events."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        ev = json.loads(conn.recv(timeout=timeout))
        if ev["type"] in DONE:
            got.append(ev)
    return got


def test_long_utterances_with_a_prompt_are_transcribed_and_stored(daemon: Daemon, speech: Callable[..., Path]) -> None:
    """A 1900-character prompt and an 18 s manual commit, then a 400-character prompt and 30 s of speech the VAD
    cuts at 28 s: every utterance is `completed` with its words, and each job completed holds them."""
    manual = live.pcm(speech(" ".join(STORY[:3])))
    with live.ws(daemon.url) as conn:
        live.send(conn, live.session_update(vad=None, prompt=GLOSSARY))
        updated, _ = live.until(conn, "session.updated")
        for piece in live.chunks(manual, 48000):
            live.send(conn, {"type": "input_audio_buffer.append", "audio": piece})
        live.send(conn, {"type": "input_audio_buffer.commit"})
        (done,) = finals(conn, 1)
    assert done["type"] == DONE[0], done
    assert "miles begins with a single step" in words(done["transcript"]) and "silent sea" in words(done["transcript"])
    job = job_of(daemon, updated["session"]["job_id"])
    with daemon.client() as c:
        stored = c.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"}).text
    assert job["status"] == "completed" and words(stored) == words(done["transcript"])

    streamed = live.pcm(speech(" ".join(STORY[:5]))) + live.silence(4)
    assert len(streamed) / 48000 > 28 + 4
    with live.ws(daemon.url) as conn:
        vad = {"type": "server_vad", "silence_duration_ms": 3000}
        live.send(conn, live.session_update(vad=vad, prompt=VOCABULARY))
        updated, _ = live.until(conn, "session.updated")
        live.send(conn, {"type": "input_audio_buffer.append", "audio": base64.b64encode(streamed).decode()})
        first, second = finals(conn, 2)
    assert first["type"] == second["type"] == DONE[0], (first, second)
    assert first["usage"]["seconds"] >= 27.9
    said = words(f"{first['transcript']} {second['transcript']}")  # the cut falls after a 5 s piece: near the end
    assert "miles begins" in said and "northern hills" in said, said
    assert job_of(daemon, updated["session"]["job_id"])["status"] == "completed"
    logs = daemon.logs()  # fitted at the first try, not saved by the plain retry (which drops the prompt)
    assert "live_final_decode_retried" not in logs and "live_utterance_failed" not in logs
