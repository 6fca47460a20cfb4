"""The speaker options of a job (issue 19): `DiarizationOptions`, the `diarization` member of `Options`.

Built from the request's form by `asr_daemon.diarization.request.parse` (its checks need the engine's
bounds) and from the stored JSON by `DiarizationOptions.from_json`; written back by `to_json`. The stored
form (`jobs.options -> 'diarization'`, part of the job's fingerprint) is
`{"num_speakers", "min_speakers", "max_speakers", "only"}` plus `"known": [{"name", "embedding"}]` when
known speakers were named: rows of every version load, and the keys written are those rows' keys.

Pure domain: imports nothing of the project, does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: The most known speakers one request may name (each with a voice sample of up to 3 MiB).
MAX_KNOWN = 4


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
