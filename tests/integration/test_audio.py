"""Probing uploads with PyAV: real audio accepted, broken audio refused with a reason."""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

from asr_daemon import errors
from asr_daemon.engine import audio
from tests import media


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
        audio.probe(speech("One two three four five six."), audio.Limits(max_seconds=1.0))


@pytest.mark.parametrize(
    ("effect", "limits", "error", "setting"),
    [
        (("channels", "3"), audio.Limits(max_channels=2), errors.UnsupportedMedia, "ASR_MAX_CHANNELS"),
        (("rate", "48000"), audio.Limits(max_sample_rate=44100), errors.UnsupportedMedia, "ASR_MAX_SAMPLE_RATE"),
    ],
    ids=["channels", "sample-rate"],
)
def test_shape_limits(
    jfk: Path, tmp_path: Path, effect: tuple[str, str], limits: audio.Limits, error: type[Exception], setting: str
) -> None:
    """More channels or a higher rate than the limits is refused, naming the setting; at the limit it passes."""
    f = tmp_path / "x.flac"
    subprocess.run(["sox", str(jfk), str(f), *effect], check=True)
    with pytest.raises(error, match=setting):
        audio.probe(f, limits)
    at_limit = audio.Limits(max_channels=3, max_sample_rate=48000)
    assert audio.probe(f, at_limit).duration > 4


def test_tag_limit_counts_tags_not_cover_art(jfk: Path, tmp_path: Path) -> None:
    """Text tags beyond ASR_MAX_TAG_BYTES are refused; a picture of the same size is not a tag."""
    mp3 = media.transcode(jfk, tmp_path / "a.mp3", "mp3", "mp3", 16000).read_bytes()
    tagged, pictured = tmp_path / "tagged.mp3", tmp_path / "pictured.mp3"
    tagged.write_bytes(media.id3_tag(200_000) + mp3)
    pictured.write_bytes(media.id3_picture(200_000) + mp3)
    limits = audio.Limits(max_tag_bytes=100_000)
    with pytest.raises(errors.TooLarge, match="ASR_MAX_TAG_BYTES"):
        audio.probe(tagged, limits)
    assert audio.probe(pictured, limits).duration > 4
    assert audio.probe(tagged, audio.Limits(max_tag_bytes=300_000)).duration > 4
