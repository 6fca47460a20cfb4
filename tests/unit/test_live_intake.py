"""Live audio intake without a daemon: semantic_vad served as server VAD, and a WAV whose write the kernel
refuses (the file-size limit, as a full disk) left exactly as it was."""

from __future__ import annotations

import errno
import resource
import struct
from pathlib import Path

import pytest

from asr_daemon.live import protocol, store
from asr_daemon.live.protocol import ProtocolError, SessionConfig
from asr_daemon.live.vad import VadOptions


@pytest.mark.parametrize(("eagerness", "silence_ms"), [("low", 1000), ("medium", 500), ("high", 250), ("auto", 500),
                                                       (None, 500)])  # fmt: skip
def test_semantic_vad_is_served_as_server_vad_with_eagerness_as_silence(eagerness: str | None, silence_ms: int) -> None:
    """turn_detection semantic_vad (the openai SDK's GA types offer it) is accepted in the GA and beta
    shapes; its eagerness picks the silence that ends an utterance, and the session shows the server_vad it runs."""
    td: dict[str, object] = {"type": "semantic_vad"} | ({"eagerness": eagerness} if eagerness else {})
    ga = protocol.parse_session("session.update", {"audio": {"input": {"turn_detection": td}}}, SessionConfig())
    beta = protocol.parse_session("transcription_session.update", {"turn_detection": td}, SessionConfig())
    assert ga.vad == beta.vad == VadOptions(silence_duration_ms=silence_ms)
    assert ga.view("s", None, "tiny.en")["audio"]["input"]["turn_detection"]["type"] == "server_vad"


BAD_TURNS = [{"type": "semantic_vad", "eagerness": "eager"}, {"type": "semantic_vad", "eagerness": []}, {"type": "vad"}]


@pytest.mark.parametrize("td", BAD_TURNS)
def test_unknown_turn_detection_is_refused_naming_the_parameter(td: dict[str, object]) -> None:
    """An unknown eagerness or turn detection type is an invalid_value error naming the field, not a crash."""
    with pytest.raises(ProtocolError) as exc:
        protocol.parse_session("session.update", {"audio": {"input": {"turn_detection": td}}}, SessionConfig())
    assert exc.value.code == "invalid_value"
    field = "session.audio.input.turn_detection."
    assert exc.value.param in {field + "eagerness", field + "type"}


def test_a_refused_write_leaves_the_wav_as_it_was(tmp_path: Path) -> None:
    """When the kernel refuses an append part way (here RLIMIT_FSIZE: EFBIG, as ENOSPC on a full disk), the
    file is cut back to what was stored and its header still tells that audio: the job keeps a valid WAV."""
    f = store.AudioFile(tmp_path / "live-x")
    f.append(b"\x01\x00" * 16000)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (store.HEADER + 32000 + 1000, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(OSError) as exc:
            f.append(b"\x02\x00" * 16000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert exc.value.errno == errno.EFBIG
    raw = (tmp_path / "live-x").read_bytes()
    assert len(raw) == store.HEADER + 32000 and f.data_bytes == 32000
    assert struct.unpack("<I", raw[40:44])[0] == 32000 and struct.unpack("<I", raw[4:8])[0] == 36 + 32000
    f.append(b"\x03\x00" * 10)  # room again: appending goes on after the stored audio
    assert (tmp_path / "live-x").read_bytes()[store.HEADER + 32000 :] == b"\x03\x00" * 10
    f.close()


def test_a_session_stores_at_most_what_a_wav_can_hold() -> None:
    """The per-session cap never passes the 4 GiB a WAV's 32-bit sizes describe (struct.pack would fail)."""
    assert 36 + store.MAX_SECONDS * 2 * 16000 < 1 << 32 <= 36 + (store.MAX_SECONDS + 1) * 2 * 16000
