"""The received audio of a session still needed in memory, addressed by sample index from the start.

Audio arrives in small pieces; they are kept as a list and joined only when an utterance is
decoded (growing one array piece by piece would copy it over and over).
"""

from __future__ import annotations

import numpy as np


class Timeline:
    """16 kHz float32 samples from `start` to `end` (absolute indices since the session began)."""

    def __init__(self) -> None:
        self._pieces: list[tuple[int, np.ndarray]] = []
        self.start = 0
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        """Add samples at the end."""
        if len(samples):
            self._pieces.append((self.end, samples))
            self.end += len(samples)

    def slice(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) of what is still held (clipped to it), as one array."""
        a, b = max(a, self.start), min(b, self.end)
        parts = [p[max(0, a - s) : b - s] for s, p in self._pieces if s < b and s + len(p) > a]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def drop_before(self, a: int) -> None:
        """Forget samples before index `a` (at most everything)."""
        a = min(max(a, self.start), self.end)
        keep: list[tuple[int, np.ndarray]] = []
        for s, p in self._pieces:
            if s + len(p) <= a:
                continue
            keep.append((a, p[a - s :]) if s < a else (s, p))
        self._pieces, self.start = keep, a

    @property
    def held(self) -> int:
        """Samples held."""
        return self.end - self.start
