"""The speaker options of a job (issue 19): `DiarizationOptions`, the `diarization` member of `Options`.

Built from the request's form by `asr_daemon.diarization.request.parse` (its checks need the engine's
bounds) and from the stored JSON by `DiarizationOptions.from_json`; written back by `to_json`. The stored
form (`jobs.options -> 'diarization'`, part of the job's fingerprint) is
`{"num_speakers", "min_speakers", "max_speakers", "only"}` plus `"known": [{"name", "embedding"}]` when
known speakers were named: rows of every version load, and the keys written are those rows' keys.

Pure domain: imports nothing of the project, does no I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

#: The most known speakers one request may name (each with a voice sample of up to 3 MiB).
MAX_KNOWN = 4
#: The longest speaker name (a known speaker's, or one given by PATCH /v1/jobs/{id}/speakers).
MAX_NAME = 100


def clean_name(raw: str) -> str | None:
    """A speaker's name as stored and shown: runs of whitespace (newlines, tabs, line separators) as
    one space, trimmed; None when that leaves nothing, more than `MAX_NAME` characters or another
    control character (names go into SRT, VTT, text and RTTM lines, where a newline starts a cue)."""
    name = " ".join(raw.split())
    if not name or len(name) > MAX_NAME or any(unicodedata.category(ch) == "Cc" for ch in name):
        return None
    return name


def shared_name(shown: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Two speakers (labels) shown under the same name, case aside, and that name; None if each differs.
    `shown` maps every label to what it is shown as: its name, else the label itself."""
    seen: dict[str, str] = {}
    for label, name in sorted(shown.items()):
        key = name.casefold()
        if key in seen:
            return seen[key], label, name
        seen[key] = label
    return None


def _count(value: object) -> int | None:
    """A stored speaker count: a whole number, or None (absent, null, or not a count)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


@dataclass(frozen=True, slots=True)
class KnownSpeaker:
    """A voice the request named: its name and its voice embedding (base64 of 256 float16).

    Between the form's parsing and the embedding (`asr_daemon.diarization.request.prepare`, before the job
    exists) `embedding` is None and `reference` holds the request's sample (a base64 data URL); only the
    embedding is stored.
    """

    name: str
    embedding: str | None = None
    reference: str | None = None

    def to_json(self) -> dict[str, str]:
        """`{"name", "embedding"}` as stored (`{"name", "reference"}` before the embedding)."""
        if self.embedding is None:
            return {"name": self.name, "reference": self.reference or ""}
        return {"name": self.name, "embedding": self.embedding}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> KnownSpeaker:
        """Inverse of `to_json`."""
        embedding, reference = data.get("embedding"), data.get("reference")
        return cls(
            name=str(data.get("name", "")),
            embedding=embedding if isinstance(embedding, str) else None,
            reference=reference if isinstance(reference, str) else None,
        )


@dataclass(frozen=True, slots=True)
class DiarizationOptions:
    """Speaker diarization asked for, with its constraints. Unset counts leave the engine to choose."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    #: diarization alone (`POST /v1/audio/diarization`): the job completes with its turns, no transcript
    only: bool = False
    known: tuple[KnownSpeaker, ...] = ()

    def to_json(self) -> dict[str, object]:
        """Plain JSON-able form, stored in `jobs.options` under `diarization`."""
        out: dict[str, object] = {
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
            "only": self.only,
        }
        if self.known:  # absent without known speakers, as always: earlier jobs' fingerprints still match
            out["known"] = [k.to_json() for k in self.known]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DiarizationOptions:
        """Inverse of `to_json`; missing keys take their defaults, unknown keys are ignored (other versions)."""
        known = data.get("known")
        return cls(
            num_speakers=_count(data.get("num_speakers")),
            min_speakers=_count(data.get("min_speakers")),
            max_speakers=_count(data.get("max_speakers")),
            only=data.get("only") is True,
            known=tuple(KnownSpeaker.from_json(k) for k in known if isinstance(k, Mapping))
            if isinstance(known, list)
            else (),
        )
