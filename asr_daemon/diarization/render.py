"""Speakers in every rendering: segments (and words) get the speaker of the turn they fall in.

A segment takes the speaker its time overlaps most; with word timestamps each word takes the speaker
of the turn holding its midpoint (or the nearest turn), and a segment is split where its words change
speaker. Labels are A, B, … (first appearance); a name given by PATCH or a known speaker replaces the
label everywhere. Formats: diarized_json (OpenAI's gpt-4o-transcribe-diarize shape), verbose_json with
`speaker` on segments and words, WebVTT voice tags, SRT and text with a `Name: ` prefix, and the
turns alone as JSON or RTTM (`/v1/audio/diarization`).
"""

from __future__ import annotations

import bisect
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from asr_daemon import errors, formats, jobs
from asr_daemon.diarization import store
from asr_daemon.diarization.engine import Turn, speaker_label

__all__ = ["Speakers", "Spoken", "render", "speaker_label", "speakers_of"]
from asr_daemon.queries import Conn


@dataclasses.dataclass(frozen=True, slots=True)
class Spoken:
    """A stored segment (or the part of one a single speaker said) with its speaker's index."""

    seg: jobs.Segment
    speaker: int | None
    #: the speaker of each of `seg.words`
    word_speakers: tuple[int | None, ...] = ()


class Speakers:
    """The turns of one job and the names its speakers go by."""

    def __init__(self, turns: Sequence[Turn], names: Mapping[str, str] | None = None) -> None:
        self.turns = list(turns)
        self.names = dict(names or {})
        self._starts = [t.start for t in self.turns]

    def name(self, speaker: int) -> str:
        """The display name of speaker index `speaker`."""
        label = speaker_label(speaker)
        return self.names.get(label, label)

    def at(self, t: float) -> int | None:
        """The speaker of the turn holding time `t`, else of the nearest turn (None without turns)."""
        if not self.turns:
            return None
        i = bisect.bisect_right(self._starts, t) - 1
        near = [j for j in (i, i + 1) if 0 <= j < len(self.turns)]
        holding = [j for j in near if self.turns[j].start <= t <= self.turns[j].end]
        if holding:
            return self.turns[holding[0]].speaker
        best = min(near, key=lambda j: min(abs(self.turns[j].start - t), abs(self.turns[j].end - t)))
        return self.turns[best].speaker

    def over(self, start: float, end: float) -> int | None:
        """The speaker who talks most within [start, end] (the one at its middle when nobody does)."""
        share: dict[int, float] = {}
        for t in self.turns:
            overlap = min(end, t.end) - max(start, t.start)
            if overlap > 0:
                share[t.speaker] = share.get(t.speaker, 0.0) + overlap
        if share:
            return max(share, key=lambda s: share[s])
        return self.at((start + end) / 2)

    def segments(self, segs: Sequence[jobs.Segment]) -> list[Spoken]:
        """Stored segments with their speaker (index or None), split where their words change speaker."""
        out: list[Spoken] = []
        for seg in segs:
            if not seg.words:
                out.append(Spoken(seg, self.over(seg.start_s, seg.end_s)))
                continue
            groups: list[tuple[int | None, list[jobs.Word]]] = []
            for w in seg.words:
                spk = self.at((w["start"] + w["end"]) / 2)
                if groups and groups[-1][0] == spk:
                    groups[-1][1].append(w)
                else:
                    groups.append((spk, [w]))
            if len(groups) == 1:
                out.append(Spoken(seg, groups[0][0], (groups[0][0],) * len(seg.words)))
                continue
            for spk, ws in groups:
                piece = dataclasses.replace(
                    seg,
                    start_s=ws[0]["start"],
                    end_s=ws[-1]["end"],
                    words=tuple(ws),
                    text="".join(w["word"] for w in ws),
                    tokens=(),
                )
                out.append(Spoken(piece, spk, (spk,) * len(ws)))
        return [dataclasses.replace(p, seg=dataclasses.replace(p.seg, seq=i)) for i, p in enumerate(out)]

    def label(self, part: Spoken) -> str | None:
        """The display name of a segment's speaker."""
        return None if part.speaker is None else self.name(part.speaker)

    def who(self, seg: jobs.Segment) -> tuple[str, str] | None:
        """(label, display name) of the speaker of one stored (unsplit) segment (None without turns)."""
        spk = self.over(seg.start_s, seg.end_s)
        return None if spk is None else (speaker_label(spk), self.name(spk))


def diarized_json(job: jobs.Job, segs: Sequence[Spoken], sp: Speakers) -> dict[str, object]:
    """OpenAI's `diarized_json`: task, duration, text, segments with type/id/start/end/text/speaker."""
    return {
        "task": job.options.task,
        "duration": job.duration_s,
        "text": formats.text_of([p.seg for p in segs]),
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{p.seg.seq}",
                "start": round(p.seg.start_s, 3),
                "end": round(p.seg.end_s, 3),
                "text": p.seg.text.strip(),
                "speaker": sp.label(p) or "",
            }
            for p in segs
        ],
    }


def verbose(job: jobs.Job, segs: Sequence[Spoken], sp: Speakers) -> dict[str, Any]:
    """verbose_json with `speaker` (display name) and `speaker_label` (A, B, …, unchanged by a rename)
    on every segment (and `speaker` on every word when words were asked for)."""
    body: dict[str, Any] = msgspec.to_builtins(formats.verbose(job, [p.seg for p in segs]))  # JSON, amended
    for out, part in zip(body["segments"], segs, strict=True):
        out["speaker"] = sp.label(part)
        out["speaker_label"] = None if part.speaker is None else speaker_label(part.speaker)
    if body.get("words") is not None:
        speakers = [spk for p in segs for spk in (p.word_speakers or (None,) * len(p.seg.words))]
        for out, spk in zip(body["words"], speakers, strict=True):
            out["speaker"] = None if spk is None else sp.name(spk)
    return body


def _prefixed(sp: Speakers, part: Spoken) -> str:
    who = sp.label(part)
    return f"{formats.cue_text(who)}: {part.seg.text.strip()}" if who else part.seg.text.strip()


def text(segs: Sequence[Spoken], sp: Speakers) -> str:
    """One paragraph (line) per change of speaker, each starting `Name: `."""
    lines: list[tuple[str | None, list[str]]] = []
    for p in segs:
        who = sp.label(p)
        if lines and lines[-1][0] == who:
            lines[-1][1].append(" ".join(p.seg.text.split()))
        else:
            lines.append((who, [" ".join(p.seg.text.split())]))
    return "\n".join(f"{formats.cue_text(who)}: {' '.join(t)}" if who else " ".join(t) for who, t in lines) + "\n"


def srt(segs: Sequence[Spoken], sp: Speakers) -> str:
    """SubRip with a `Name: ` prefix."""
    return formats.srt([dataclasses.replace(p.seg, text=_prefixed(sp, p)) for p in segs])


def vtt(segs: Sequence[Spoken], sp: Speakers) -> str:
    """WebVTT with voice tags (`<v Name>text`)."""
    return formats.vtt([p.seg for p in segs], [sp.label(p) for p in segs])


def turns_json(job: jobs.Job, sp: Speakers) -> dict[str, object]:
    """`/v1/audio/diarization`'s json: duration, number of speakers, turns."""
    return {
        "duration": job.duration_s,
        "num_speakers": len({t.speaker for t in sp.turns}),
        "segments": [{"start": t.start, "end": t.end, "speaker": sp.name(t.speaker)} for t in sp.turns],
    }


def rttm(job: jobs.Job, sp: Speakers) -> str:
    """The turns as standard RTTM lines (file id: the upload's name without extension, else the job id)."""
    name = (job.filename or str(job.id)).rsplit(".", 1)[0]
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or str(job.id)
    return "".join(
        f"SPEAKER {name} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {'_'.join(sp.name(t.speaker).split())}"
        " <NA> <NA>\n"
        for t in sp.turns
    )


DIARIZED_ONLY = {jobs.ResponseFormat.DIARIZED_JSON, jobs.ResponseFormat.RTTM}


async def speakers_of(conn: Conn, job_id: uuid.UUID) -> Speakers:
    """The stored turns and names of a job."""
    return Speakers(await store.turns(conn, job_id), store.names_of(await store.state(conn, job_id)))


async def render(conn: Conn, fmt: jobs.ResponseFormat, job: jobs.Job, rows: Sequence[jobs.Segment]) -> tuple[str, str]:
    """(body, media type) of a finished job in `fmt`: with speakers when the job was diarized."""
    spec = job.options.diarization
    if spec is None:
        if fmt in DIARIZED_ONLY:
            raise errors.Conflict(f"the job was not diarized: submit it with diarize=true for {fmt.value}")
        return formats.render(fmt, job, rows)
    sp = await speakers_of(conn, job.id)
    if spec.only or fmt is jobs.ResponseFormat.RTTM:
        if fmt is jobs.ResponseFormat.RTTM:
            return rttm(job, sp), "text/plain"
        return msgspec.json.encode(turns_json(job, sp)).decode(), "application/json"
    segs = sp.segments(rows)
    if fmt is jobs.ResponseFormat.DIARIZED_JSON:
        return msgspec.json.encode(diarized_json(job, segs, sp)).decode(), "application/json"
    if fmt is jobs.ResponseFormat.VERBOSE_JSON:
        return msgspec.json.encode(verbose(job, segs, sp)).decode(), "application/json"
    if fmt is jobs.ResponseFormat.TEXT:
        return text(segs, sp), formats.MEDIA_TYPES[fmt]
    if fmt is jobs.ResponseFormat.SRT:
        return srt(segs, sp), formats.MEDIA_TYPES[fmt]
    if fmt is jobs.ResponseFormat.VTT:
        return vtt(segs, sp), formats.MEDIA_TYPES[fmt]
    return formats.render(fmt, job, rows)
