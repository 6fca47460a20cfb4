"""A voice command's audio: any PCM a Wyoming client sends, converted to 16 kHz mono 16-bit and
written to a WAV file in `uploads/tmp/` while it arrives (never held whole in memory).

Wyoming audio is raw little-endian PCM described by `rate` (Hz), `width` (bytes per sample: 1 is
unsigned 8-bit as in WAV, 2/3/4 are signed) and `channels` (interleaved). Channels are mixed down by
their mean, and the rate is changed by FFmpeg's resampler (PyAV, the library that decodes uploads),
which low-pass filters first: a plain linear interpolation (audioop's `ratecv`) folds everything
above 8 kHz of a 48 kHz microphone back into the speech band.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

RATE = 16000
"""What Whisper hears, and what the stored WAV holds (mono, 16-bit)."""
WIDTHS = (1, 2, 3, 4)
FLUSH_BYTES = 256 << 10
"""Converted audio buffered before a write to disk (8 s at 16 kHz)."""


class Refused(ValueError):
    """The audio cannot be accepted; the message says why (sent back in an `error` event)."""


@dataclass(frozen=True)
class PcmFormat:
    """The format of raw PCM as Wyoming's audio events describe it."""

    rate: int
    width: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return self.width * self.channels

    def check(self, max_rate: int, max_channels: int) -> None:
        """Raise `Refused` unless this is a format we convert."""
        for name in ("rate", "width", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise Refused(f"audio {name} must be an integer, not {str(value)[:40]!r}")
        if not 1000 <= self.rate <= max_rate:
            raise Refused(f"audio rate {self.rate} Hz is outside 1000..{max_rate} (ASR_MAX_SAMPLE_RATE)")
        if self.width not in WIDTHS:
            raise Refused(f"audio width {self.width} is not 1, 2, 3 or 4 bytes")
        if not 1 <= self.channels <= max_channels:
            raise Refused(f"audio has {self.channels} channels; 1..{max_channels} are accepted (ASR_MAX_CHANNELS)")


def to_float(data: bytes, fmt: PcmFormat) -> np.ndarray:
    """Whole frames of PCM → float32 mono in [-1, 1) (channels averaged)."""
    if fmt.width == 1:
        x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.width == 2:
        x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    elif fmt.width == 3:
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(data, "<i4").astype(np.float32) / float(1 << 31)
    if fmt.channels > 1:
        x = x.reshape(-1, fmt.channels).mean(axis=1, dtype=np.float32)
    return x


class Converter:
    """Streaming conversion of one format to 16 kHz mono s16 (state kept across chunks)."""

    def __init__(self, fmt: PcmFormat) -> None:
        self.fmt = fmt
        self._rest = b""  # a partial frame carried to the next chunk
        self._passthrough = fmt == PcmFormat(RATE, 2, 1)
        self._resampler = None if self._passthrough else av.AudioResampler(format="s16", layout="mono", rate=RATE)

    def feed(self, data: bytes) -> bytes:
        """Convert the next bytes of the stream; returns what is ready of the output."""
        data = self._rest + data
        whole = len(data) - len(data) % self.fmt.frame_bytes
        data, self._rest = data[:whole], data[whole:]
        if not data:
            return b""
        if self._passthrough:
            return data
        frame = av.AudioFrame.from_ndarray(to_float(data, self.fmt).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.fmt.rate
        return self._run(frame)

    def flush(self) -> bytes:
        """The resampler's tail at the end of the stream (a partial frame is dropped)."""
        self._rest = b""
        return b"" if self._passthrough else self._run(None)

    def _run(self, frame: av.AudioFrame | None) -> bytes:
        assert self._resampler is not None
        return b"".join(out.to_ndarray().tobytes() for out in self._resampler.resample(frame))


class Recording:
    """One command's audio on its way to `uploads/tmp/<random>.wav`.

    `add` converts in the event loop (cheap: a few ms per second of audio) and buffers; `flush` and
    `finish` do the disk work and are blocking (run them in a thread). `discard` removes the file.
    """

    def __init__(self, tmp_dir: Path, fmt: PcmFormat, max_seconds: float) -> None:
        self.path = tmp_dir / f"wyoming-{uuid.uuid4().hex}.wav"
        self.max_bytes = int(max_seconds * RATE) * 2
        self.max_seconds = max_seconds
        self.converter = Converter(fmt)
        self.received = 0  # input bytes
        self.written = 0  # output bytes, on disk or pending
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self._wav: wave.Wave_write | None = None
        self._ended = False

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self.written / (2 * RATE)

    def add(self, data: bytes, fmt: PcmFormat) -> None:
        """Append a chunk (its own format: a change mid-stream starts a new conversion)."""
        if self.seconds + len(data) / (fmt.frame_bytes * fmt.rate) > self.max_seconds + 1:
            self._too_long()  # before converting: 4 MiB at 1 kHz would be an hour of 16 kHz output
        self.received += len(data)
        if fmt != self.converter.fmt:
            self._take(self.converter.flush())
            self.converter = Converter(fmt)
        self._take(self.converter.feed(data))

    def _take(self, out: bytes) -> None:
        if not out:
            return
        self.written += len(out)
        if self.written > self.max_bytes:
            self._too_long()
        self.pending.append(out)
        self.pending_bytes += len(out)

    def _too_long(self) -> None:
        raise Refused(f"the voice command is longer than {self.max_seconds:g} s (ASR_WYOMING_MAX_SECONDS)")

    def flush(self) -> None:
        """Write what is buffered (blocking)."""
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        if self._wav is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115  # closed in finish()/discard()
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(RATE)
        self._wav.writeframes(data)

    def end(self) -> int:
        """The stream is over: take the resampler's tail (a partial frame is dropped); the output bytes in all."""
        if not self._ended:
            self._ended = True
            self._take(self.converter.flush())
        return self.written

    def finish(self) -> tuple[int, str]:
        """Flush the resampler's tail, close the WAV (header patched) and hash it: (size, sha256). Blocking."""
        self.end()
        self.flush()
        if self._wav is None:
            return 0, ""
        self._wav.close()
        self._wav = None
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return self.path.stat().st_size, digest.hexdigest()

    def discard(self) -> None:
        """Close and remove the file (blocking, but only a close and an unlink)."""
        if self._wav is not None:
            with contextlib.suppress(OSError, wave.Error):
                self._wav.close()
            self._wav = None
        self.pending, self.pending_bytes = [], 0
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
