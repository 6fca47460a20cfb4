"""Audio formats of the Realtime protocol, decoded to 16 kHz mono 16-bit PCM (what Whisper reads).

`audio/pcm` is 16-bit little-endian mono at 24 kHz (OpenAI's only rate); 16 kHz is accepted as a
documented extension (`{"type": "audio/pcm", "rate": 16000}`), which skips resampling.
`audio/pcmu` and `audio/pcma` are G.711 μ-law and A-law at 8 kHz. Resampling is libswresample's
(PyAV, already a dependency), stateful across appends so chunk edges leave no clicks.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import av
import numpy as np

#: The rate everything is decoded to (Whisper's, and the stored audio's).
RATE = 16000
#: `audio/pcm` rates accepted: OpenAI's 24 kHz, and 16 kHz as our extension.
PCM_RATES = (24000, 16000)
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")


@dataclass(frozen=True)
class AudioFormat:
    """A wire format: its type and sample rate."""

    type: str = "audio/pcm"
    rate: int = 24000

    @property
    def bytes_per_second(self) -> int:
        """Bytes of one second of this format on the wire."""
        return self.rate * (2 if self.type == "audio/pcm" else 1)

    def view(self) -> dict[str, object]:
        """As the protocol shows it."""
        return {"type": self.type, "rate": self.rate} if self.type == "audio/pcm" else {"type": self.type}


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 7
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 7
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW = _ulaw_table()
ALAW = _alaw_table()


class Decoder:
    """Turns appended wire bytes into 16 kHz int16 samples, keeping state between appends."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self._odd = b""  # a PCM sample split across two appends
        rate = fmt.rate if fmt.type == "audio/pcm" else 8000
        self._rate = rate
        self._resampler = None if rate == RATE else av.AudioResampler(format="s16", layout="mono", rate=RATE)

    def feed(self, raw: bytes) -> np.ndarray:
        """The 16 kHz samples these bytes complete (int16; may be empty)."""
        if self.fmt.type == "audio/pcm":
            raw = self._odd + raw
            cut = len(raw) - len(raw) % 2
            self._odd = raw[cut:]
            samples = np.frombuffer(raw[:cut], dtype="<i2").astype(np.int16)
        else:
            table = ULAW if self.fmt.type == "audio/pcmu" else ALAW
            samples = table[np.frombuffer(raw, dtype=np.uint8)]
        return self._resample(samples)

    def flush(self) -> np.ndarray:
        """What the resampler still holds, at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return self._join(self._resampler.resample(None))

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None or len(samples) == 0:
            return samples
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        return self._join(self._resampler.resample(frame))

    @staticmethod
    def _join(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def to_float(samples: np.ndarray) -> np.ndarray:
    """int16 samples as the float32 in [-1, 1) that Whisper and Silero read."""
    return samples.astype(np.float32) / 32768.0


def b64decode(data: str) -> bytes:
    """An append's audio: strict base64 (binascii.Error / ValueError when it is not)."""
    return base64.b64decode(data, validate=True)
