"""Server VAD: faster-whisper's bundled Silero model, run on each 32 ms chunk as audio arrives.

Speech starts at the first chunk whose probability reaches `threshold`; it stops once the
probability has stayed under `threshold - 0.15` (Silero's own hysteresis) for `silence_duration_ms`.
While speech goes on, `quiet_from` tells where the current run of quiet chunks began (the session
decodes the utterance speculatively from there, so its text is ready when the silence is long enough).
Each chunk is scored with the 64 samples before it as context and a fresh state, exactly as
`faster_whisper.vad.SileroVADModel` scores a whole file (its rows are independent), so a stream
is scored as the same audio would be offline. Scoring blocks (ONNX Runtime): call `feed` off the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 512  # samples per Silero step at 16 kHz (32 ms)
CONTEXT = 64
HYSTERESIS = 0.15


@dataclass(frozen=True)
class VadOptions:
    """OpenAI's `server_vad` knobs with their defaults."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def view(self) -> dict[str, object]:
        """As the protocol shows it."""
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True)
class Edge:
    """Speech started (`start=True`) or stopped at `sample` (counted from the stream's start); a stop
    carries where its silence began (`quiet_from`)."""

    start: bool
    sample: int
    quiet_from: int = 0


def load_model() -> Any:
    """faster-whisper's Silero model (loaded once per process; its session is thread-safe)."""
    from faster_whisper.vad import get_vad_model  # heavy import, only when a live session starts

    return get_vad_model()


class StreamingVad:
    """Finds speech edges in a 16 kHz float stream fed in pieces of any size."""

    def __init__(self, options: VadOptions, model: Any, start: int = 0, speaking: bool = False) -> None:
        """A VAD whose first sample is the stream's sample `start` (one made mid-stream, by a session.update,
        counts from where the stream is), already `speaking` if an utterance is open there."""
        self.options = options
        self._session = model.session
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._position = start  # the stream position of the next sample scored
        self._silence_needed = max(1, round(options.silence_duration_ms * 16 / CHUNK))
        self._quiet = 0
        self.speaking = speaking
        self.quiet_from: int | None = None  # while speaking: the first sample of the current quiet run

    def feed(self, samples: np.ndarray) -> list[Edge]:
        """Score the whole chunks now available; the edges they show, in order."""
        buf = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = len(buf) // CHUNK
        self._pending = buf[n * CHUNK :].copy()
        if n == 0:
            return []
        probs = self._score(buf[: n * CHUNK])
        edges: list[Edge] = []
        low = self.options.threshold - HYSTERESIS
        for i, p in enumerate(probs):
            at = self._position + i * CHUNK
            if not self.speaking:
                if p >= self.options.threshold:
                    self.speaking, self._quiet = True, 0
                    edges.append(Edge(True, at))
            elif p < low:
                if self._quiet == 0:
                    self.quiet_from = at
                self._quiet += 1
                if self._quiet >= self._silence_needed:
                    self.speaking = False
                    edges.append(Edge(False, at + CHUNK, self.quiet_from or 0))
                    self.quiet_from = None
            else:
                self._quiet, self.quiet_from = 0, None
        self._position += n * CHUNK
        return edges

    def reset(self) -> None:
        """Forget that speech is going on (after a manual commit or clear)."""
        self.speaking, self._quiet, self.quiet_from = False, 0, None

    def _score(self, audio: np.ndarray) -> np.ndarray:
        rows = audio.reshape(-1, CHUNK)
        contexts = np.concatenate([self._context[None, :], rows[:-1, -CONTEXT:]], axis=0)
        self._context = rows[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, rows], axis=1).astype(np.float32)
        h = np.zeros((1, 1, 128), dtype=np.float32)
        c = np.zeros((1, 1, 128), dtype=np.float32)
        out, _, _ = self._session.run(None, {"input": batch, "h": h, "c": c})
        return np.asarray(out).reshape(-1)
