"""Stable partial text: LocalAgreement-2, the policy of whisper_streaming (Macháček et al., 2023).

The growing utterance is decoded again and again; a word is stable once two decodes in a row agree
on it and on every word before it. With a multilingual model an utterance's first words need three
(`first_votes`, chosen by `live.decoding`): the earliest decodes see under a second of audio over a
short encoder window, and two of them can agree on a start that was never said (base on jfk.flac:
"Why do you want your country" for "What your country"), which the final decode, prefixed with the
stable words, would then keep. Three votes cost tiny.en 0.24 s of first-delta latency on real
speech and did not change its text, so English-only models keep two. Only stable words are sent as deltas,
so a delta is never taken back. The word an older hypothesis ends on is never stable from it: the
audio cut that word off, and decodes a fraction of a second apart guess it alike (tiny.en agreed on
"rainy dog" for "lazy dog" in every run of the page's test): it needs an older decode that heard what
came after it. A decode forced to start with the stable text may glue its next word on ("round" →
"round-fark"): that piece counts as a word of its own, so the stable text never stalls. When the
utterance ends its final decode is authoritative: what it adds past the stable words is the last
delta, and `completed` carries the whole final text.
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
    """LocalAgreement over successive hypotheses of one utterance: `first_votes` decodes for the first
    words, then 2; a word the older hypothesis ended on is not stable yet (see the module's docstring)."""

    def __init__(self, first_votes: int = 2) -> None:
        self.stable: list[str] = []
        self._first_votes = first_votes
        self._history: list[list[str]] = []

    @property
    def text(self) -> str:
        """The stable text so far."""
        return "".join(self.stable)

    def _split(self, hypothesis: str) -> list[str] | None:
        """The hypothesis as the stable words and its own words after them (None: it contradicts them)."""
        sent, hyp = self.text, hypothesis.strip()
        if sent and hyp[: len(sent)].lower() == sent.lower():
            return self.stable + _WORD.findall(hyp[len(sent) :])  # a glued "-fark" stays a word
        current = words(hypothesis)
        if [norm(w) for w in current[: len(self.stable)]] != [norm(w) for w in self.stable]:
            return None
        return self.stable + current[len(self.stable) :]

    def update(self, hypothesis: str) -> str:
        """Take one more decode of the utterance; the newly stable text (a delta, maybe empty)."""
        current = self._split(hypothesis)
        if current is None:  # stability never goes back: a decode that disagrees earlier adds nothing
            return ""
        votes = 2 if self.stable else self._first_votes
        self._history = [*self._history, current][-votes:]
        if len(self._history) < votes:
            return ""
        agreed = 0
        for column in zip(*(h[:-1] for h in self._history[:-1]), self._history[-1], strict=False):
            if not norm(column[0]) or any(norm(w) != norm(column[0]) for w in column[1:]):
                break
            agreed += 1
        if agreed <= len(self.stable):
            return ""
        new = current[len(self.stable) : agreed]
        self.stable.extend(new)
        return "".join(new)

    def finish(self, final: str) -> str:
        """The last delta: what the final text adds past the stable words ("" if it diverged)."""
        final = final.strip()
        sent = self.text
        return final[len(sent) :] if final.startswith(sent) else ""
