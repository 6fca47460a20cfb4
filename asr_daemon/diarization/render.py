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
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from asr_daemon import errors, formats, jobs
from asr_daemon.diarization import store
from asr_daemon.diarization.engine import Turn, speaker_label

__all__ = ["Speakers", "render", "speaker_label", "speakers_of"]
from asr_daemon.queries import Conn

Seg = dict[str, Any]


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

    def segments(self, rows: Sequence[Any]) -> list[Seg]:
        """Stored segments as dicts with `speaker` (index or None), split where their words change speaker."""
        out: list[Seg] = []
        for row in rows:
            seg = dict(row)
            words = seg.get("words") or []
            if not words:
                out.append({**seg, "speaker": self.over(seg["start_s"], seg["end_s"])})
                continue
            groups: list[tuple[int | None, list[dict[str, Any]]]] = []
            for w in words:
                spk = self.at((w["start"] + w["end"]) / 2)
                if groups and groups[-1][0] == spk:
                    groups[-1][1].append({**w, "speaker": spk})
                else:
                    groups.append((spk, [{**w, "speaker": spk}]))
            if len(groups) == 1:
                out.append({**seg, "speaker": groups[0][0], "words": groups[0][1]})
                continue
            for spk, ws in groups:
                piece = {**seg, "start_s": ws[0]["start"], "end_s": ws[-1]["end"], "words": ws, "speaker": spk}
                piece["text"] = "".join(w["word"] for w in ws)
                piece["tokens"] = []
                out.append(piece)
        for i, seg in enumerate(out):
            seg["seq"] = i
        return out

    def label_of(self, row: Any) -> str | None:
        """The display name of the speaker of one stored (unsplit) segment."""
        spk = self.over(row["start_s"], row["end_s"])
        return None if spk is None else self.name(spk)

    def label(self, seg: Seg) -> str | None:
        """The display name of a segment's speaker."""
        return None if seg.get("speaker") is None else self.name(seg["speaker"])


def diarized_json(job: Mapping[str, Any], segs: Sequence[Seg], sp: Speakers) -> dict[str, Any]:
    """OpenAI's `diarized_json`: task, duration, text, segments with type/id/start/end/text/speaker."""
    options = job["options"] or {}
    return {
        "task": options.get("task", "transcribe"),
        "duration": job["duration_s"],
        "text": formats.text_of(segs),
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{s['seq']}",
                "start": round(s["start_s"], 3),
                "end": round(s["end_s"], 3),
                "text": s["text"].strip(),
                "speaker": sp.label(s) or "",
            }
            for s in segs
        ],
    }


def verbose(job: Mapping[str, Any], segs: Sequence[Seg], sp: Speakers) -> dict[str, Any]:
    """verbose_json with `speaker` on every segment (and every word when words were asked for)."""
    body: dict[str, Any] = msgspec.to_builtins(formats.verbose(job, segs))
    for out, seg in zip(body["segments"], segs, strict=True):
        out["speaker"] = sp.label(seg)
    if body.get("words") is not None:
        words = [w for s in segs for w in (s.get("words") or [])]
        for out, w in zip(body["words"], words, strict=True):
            out["speaker"] = None if w.get("speaker") is None else sp.name(w["speaker"])
    return body


def _prefixed(sp: Speakers, seg: Seg) -> str:
    who = sp.label(seg)
    return f"{who}: {seg['text'].strip()}" if who else seg["text"].strip()


def text(segs: Sequence[Seg], sp: Speakers) -> str:
    """One paragraph per change of speaker, each starting `Name: `."""
    lines: list[tuple[str | None, list[str]]] = []
    for s in segs:
        who = sp.label(s)
        if lines and lines[-1][0] == who:
            lines[-1][1].append(s["text"].strip())
        else:
            lines.append((who, [s["text"].strip()]))
    return "\n".join(f"{who}: {' '.join(t)}" if who else " ".join(t) for who, t in lines) + "\n"


def srt(segs: Sequence[Seg], sp: Speakers) -> str:
    """SubRip with a `Name: ` prefix."""
    return formats.srt([{**s, "text": _prefixed(sp, s)} for s in segs])


def vtt(segs: Sequence[Seg], sp: Speakers) -> str:
    """WebVTT with voice tags (`<v Name>text`)."""
    tagged = [{**s, "text": f"<v {sp.label(s)}>{s['text'].strip()}" if sp.label(s) else s["text"]} for s in segs]
    return formats.vtt(tagged)


def turns_json(job: Mapping[str, Any], sp: Speakers) -> dict[str, Any]:
    """`/v1/audio/diarization`'s json: duration, number of speakers, turns."""
    return {
        "duration": job["duration_s"],
        "num_speakers": len({t.speaker for t in sp.turns}),
        "segments": [{"start": t.start, "end": t.end, "speaker": sp.name(t.speaker)} for t in sp.turns],
    }


def rttm(job: Mapping[str, Any], sp: Speakers) -> str:
    """The turns as standard RTTM lines (file id: the upload's name without extension, else the job id)."""
    name = (job["filename"] or str(job["id"])).rsplit(".", 1)[0]
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or str(job["id"])
    return "".join(
        f"SPEAKER {name} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {sp.name(t.speaker).replace(' ', '_')}"
        " <NA> <NA>\n"
        for t in sp.turns
    )


DIARIZED_ONLY = {jobs.ResponseFormat.DIARIZED_JSON, jobs.ResponseFormat.RTTM}


async def speakers_of(conn: Conn, job_id: Any) -> Speakers:
    """The stored turns and names of a job."""
    return Speakers(await store.turns(conn, job_id), store.names_of(await store.state(conn, job_id)))


async def render(conn: Conn, fmt: jobs.ResponseFormat, job: Mapping[str, Any], rows: Sequence[Any]) -> tuple[str, str]:
    """(body, media type) of a finished job in `fmt`: with speakers when the job was diarized."""
    spec = (job["options"] or {}).get("diarization")
    if not spec:
        if fmt in DIARIZED_ONLY:
            raise errors.Conflict(f"the job was not diarized: submit it with diarize=true for {fmt.value}")
        return formats.render(fmt, job, rows)
    sp = await speakers_of(conn, job["id"])
    if spec.get("only") or fmt is jobs.ResponseFormat.RTTM:
        if fmt is jobs.ResponseFormat.RTTM:
            return rttm(job, sp), "text/plain; charset=utf-8"
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
