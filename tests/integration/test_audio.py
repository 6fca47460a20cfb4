"""Probing uploads with PyAV: real audio accepted, broken audio refused with a reason."""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

from asr_daemon import audio, errors


def test_stream_equals_faster_whisper_decode(jfk: Path) -> None:
    """The streamed samples are exactly faster-whisper's decode_audio output."""
    assert np.array_equal(audio.decode(jfk), decode_audio(str(jfk)))


@pytest.mark.parametrize("fmt", ["flac", "ogg", "wav"])
def test_streaming_leaves_no_cyclic_garbage(fmt: str, speech: Callable[..., Path]) -> None:
    """Decoding a file creates no reference cycles, so `stream` needs no gc.collect() (a 45-110 ms GIL stall)."""
    path = speech("Nothing of the resampler may wait for the cycle collector.", fmt=fmt)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert len(audio.decode(path)) > 0
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_probe_measures_duration(jfk: Path) -> None:
    """Probing reports the real duration, channels and codec."""
    info = audio.probe(jfk)
    assert 4 < info.duration < 10 and info.channels == 1 and info.codec == "flac"


def test_truncated_wav_is_refused(jfk: Path, tmp_path: Path) -> None:
    """A WAV whose header promises more data than present is reported as truncated."""
    wav = tmp_path / "a.wav"
    subprocess.run(["sox", str(jfk), str(wav)], check=True)
    data = wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(errors.BadAudio, match="truncated"):
        audio.probe(cut)


def test_truncated_flac_is_refused(jfk: Path, tmp_path: Path) -> None:
    """A FLAC cut in the middle is reported as truncated."""
    cut = tmp_path / "cut.flac"
    data = jfk.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.BadAudio):
        audio.probe(cut)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", errors.UnsupportedMedia),
        (b"hello, this is text\n" * 50, errors.UnsupportedMedia),
        (bytes(range(256)) * 40, errors.UnsupportedMedia),
    ],
)
def test_non_audio_is_refused(tmp_path: Path, content: bytes, error: type[Exception]) -> None:
    """Empty files, text and random bytes are not audio."""
    f = tmp_path / "x.mp3"
    f.write_bytes(content)
    with pytest.raises(error):
        audio.probe(f)


def test_duration_limit(speech: Callable[..., Path]) -> None:
    """Audio longer than the limit is refused before anything is decoded."""
    with pytest.raises(errors.TooLarge, match="ASR_MAX_AUDIO_SECONDS"):
        audio.probe(speech("One two three four five six."), max_seconds=1.0)
