"""Wyoming audio → 16 kHz mono 16-bit WAV: every rate, width and channel count converts correctly,
chunk boundaries do not matter, bad formats and over-long commands are refused, and nothing stays on
disk after a discard."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from asr_daemon.wyoming.recording import RATE, Converter, PcmFormat, Recording, Refused, to_float


def tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A sine wave as float32."""
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pcm(x: np.ndarray, width: int, channels: int) -> bytes:
    """Float samples as interleaved little-endian PCM of `width` bytes (1 = unsigned 8-bit) on every channel."""
    x = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        return (np.clip(x * 128 + 128, 0, 255)).astype(np.uint8).tobytes()
    if width == 2:
        return (x * 32767).astype("<i2").tobytes()
    if width == 3:
        v = (x * ((1 << 23) - 1)).astype(np.int32)
        b = v.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        return b.tobytes()
    return (x * ((1 << 31) - 1)).astype("<i4").tobytes()


def as_float(out: bytes) -> np.ndarray:
    """16-bit output as float."""
    return np.frombuffer(out, "<i2").astype(np.float32) / 32768


def peak_hz(x: np.ndarray, rate: int) -> float:
    """The strongest frequency of `x`."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_format_becomes_16k_mono_with_the_same_tone(rate: int, width: int, channels: int) -> None:
    """A 440 Hz tone in any rate/width/channels comes out at 16 kHz, 1 s long, 440 Hz, same loudness."""
    conv = Converter(PcmFormat(rate, width, channels))
    out = conv.feed(pcm(tone(rate, 1.0), width, channels)) + conv.flush()
    y = as_float(out)
    assert abs(len(y) - RATE) <= 2
    assert abs(peak_hz(y, RATE) - 440) < 3
    rms = float(np.sqrt(np.mean(y[1000:-1000] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_downsampling_filters_what_16k_cannot_hold() -> None:
    """A 12 kHz tone at 48 kHz is removed, not folded back to 4 kHz (linear interpolation would alias it)."""
    conv = Converter(PcmFormat(48000, 2, 1))
    y = as_float(conv.feed(pcm(tone(48000, 1.0, freq=12000), 2, 1)) + conv.flush())
    assert float(np.sqrt(np.mean(y**2))) < 0.01


def test_channels_are_mixed_down_by_their_mean() -> None:
    """Left at +0.5 and right at -0.5 cancel; a signal on one channel only comes out at half level."""
    left = tone(16000, 0.5)
    both = np.stack([left, -left], axis=1).reshape(-1)
    assert np.allclose(to_float((both * 32767).astype("<i2").tobytes(), PcmFormat(16000, 2, 2)), 0, atol=1e-4)
    one = np.stack([left, np.zeros_like(left)], axis=1).reshape(-1)
    mixed = to_float((one * 32767).astype("<i2").tobytes(), PcmFormat(16000, 2, 2))
    assert np.allclose(mixed, left / 2, atol=1e-4)


def test_chunk_boundaries_inside_frames_do_not_matter() -> None:
    """The same stream cut into odd-sized chunks (splitting samples and frames) converts to the same output."""
    fmt = PcmFormat(44100, 3, 2)
    data = pcm(tone(44100, 0.7), 3, 2)
    whole = Converter(fmt)
    expected = whole.feed(data) + whole.flush()
    pieces = Converter(fmt)
    out = b"".join(pieces.feed(data[i : i + 1001]) for i in range(0, len(data), 1001)) + pieces.flush()
    assert out == expected


def test_16k_mono_16bit_passes_through_unchanged() -> None:
    """What Home Assistant sends (16 kHz, 16-bit, mono) is stored bit for bit."""
    data = pcm(tone(16000, 0.3), 2, 1)
    conv = Converter(PcmFormat(16000, 2, 1))
    assert conv.feed(data[:333]) + conv.feed(data[333:]) + conv.flush() == data


@pytest.mark.parametrize(
    ("fmt", "words"),
    [
        (PcmFormat(0, 2, 1), "rate"),
        (PcmFormat(400000, 2, 1), "rate"),
        (PcmFormat(16000, 5, 1), "width"),
        (PcmFormat(16000, 0, 1), "width"),
        (PcmFormat(16000, 2, 0), "channels"),
        (PcmFormat(16000, 2, 64), "channels"),
        (PcmFormat("16000", 2, 1), "integer"),  # type: ignore[arg-type]  # what a client may send
        (PcmFormat(16000, True, 1), "integer"),
    ],
)
def test_unusable_formats_are_refused_with_a_reason(fmt: PcmFormat, words: str) -> None:
    """A rate, width or channel count we cannot convert is refused, the message naming which."""
    with pytest.raises(Refused, match=words):
        fmt.check(max_rate=96000, max_channels=6)


def test_recording_writes_a_16k_mono_wav_and_hashes_it(tmp_path: Path) -> None:
    """A recording fed in chunks ends as a valid WAV of the right length, with its size and sha256."""
    rec = Recording(tmp_path, PcmFormat(48000, 2, 2), max_seconds=10)
    data = pcm(tone(48000, 2.0), 2, 2)
    for i in range(0, len(data), 4000):
        rec.add(data[i : i + 4000], PcmFormat(48000, 2, 2))
        rec.flush()
    size, sha = rec.finish()
    with wave.open(str(rec.path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert abs(w.getnframes() - 32000) <= 2
    assert size == rec.path.stat().st_size and len(sha) == 64
    rec.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_format_change_mid_stream_is_converted_too(tmp_path: Path) -> None:
    """Chunks in another format than audio-start announced are converted by their own format."""
    rec = Recording(tmp_path, PcmFormat(16000, 2, 1), max_seconds=10)
    rec.add(pcm(tone(16000, 0.5), 2, 1), PcmFormat(16000, 2, 1))
    rec.add(pcm(tone(48000, 0.5), 4, 2), PcmFormat(48000, 4, 2))
    rec.finish()
    with wave.open(str(rec.path)) as w:
        assert abs(w.getnframes() - 16000) <= 2
    rec.discard()


def test_a_command_longer_than_the_limit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    """Past ASR_WYOMING_MAX_SECONDS the recording refuses more audio; discard removes the partial file."""
    rec = Recording(tmp_path, PcmFormat(16000, 2, 1), max_seconds=1)
    rec.add(pcm(tone(16000, 0.9), 2, 1), PcmFormat(16000, 2, 1))
    rec.flush()
    with pytest.raises(Refused, match="longer than 1 s"):
        rec.add(pcm(tone(16000, 0.2), 2, 1), PcmFormat(16000, 2, 1))
    rec.discard()
    assert list(tmp_path.iterdir()) == []


def test_an_oversized_chunk_is_refused_before_it_is_converted(tmp_path: Path) -> None:
    """4 MiB at 1 kHz (70 minutes) is refused from its length alone, not after resampling it to 16 kHz."""
    rec = Recording(tmp_path, PcmFormat(1000, 1, 1), max_seconds=300)
    with pytest.raises(Refused, match="longer than 300 s"):
        rec.add(bytes(4 << 20), PcmFormat(1000, 1, 1))
    assert rec.written == 0 and rec.pending == []
    rec.discard()
