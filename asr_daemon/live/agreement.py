"""Stable partial text: LocalAgreement-2, the policy of whisper_streaming (Macháček et al., 2023).

The growing utterance is decoded again and again; a word is stable once two decodes in a row agree
on it and on every word before it. Only stable words are sent as deltas, so a delta is never taken
back. When the utterance ends its final decode is authoritative: what it adds past the stable
words is the last delta, and `completed` carries the whole final text.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\s*\S+")


def words(text: str) -> list[str]:
    """The words of a text, each with the spaces before it (so joining them gives the text back)."""
    return _WORD.findall(text.strip())


def norm(word: str) -> str:
    """A word as compared: lower case, no spaces or punctuation around it."""
    return word.strip().lower().strip(".,!?;:\"'")


class Agreement:
    """LocalAgreement-2 over successive hypotheses of one utterance."""

    def __init__(self) -> None:
        self.stable: list[str] = []
        self._previous: list[str] = []

    @property
    def text(self) -> str:
        """The stable text so far."""
        return "".join(self.stable)

    def update(self, hypothesis: str) -> str:
        """Take one more decode of the utterance; the newly stable text (a delta, maybe empty)."""
        current = words(hypothesis)
        agreed = 0
        for a, b in zip(self._previous, current, strict=False):
            if norm(a) != norm(b) or not norm(a):
                break
            agreed += 1
        self._previous = current
        # stability never goes back: a later decode that disagrees earlier adds nothing
        if agreed <= len(self.stable) or [norm(w) for w in current[: len(self.stable)]] != [
            norm(w) for w in self.stable
        ]:
            return ""
        new = current[len(self.stable) : agreed]
        self.stable.extend(new)
        return "".join(new)

    def finish(self, final: str) -> str:
        """The last delta: what the final text adds past the stable words ("" if it diverged)."""
        final = final.strip()
        sent = self.text
        return final[len(sent) :] if final.startswith(sent) else ""
