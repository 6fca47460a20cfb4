"""The diarization fields of a request: diarize, num/min/max_speakers, known speakers (OpenAI's names).

`parse` validates the form fields (raising `jobs.Invalid`, a 400) and returns the request with
`options.diarization` set (a `jobs.DiarizationOptions`); known-speaker references (data URLs of short
audio samples) are decoded, checked and embedded by `embed_known` in a thread, so a bad one is refused
before the job exists. Only the embeddings are stored (base64 of 256 float16; see `jobs.speakers`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from asr_daemon import errors, jobs
from asr_daemon.diarization.engine import MAX_SPEAKERS, Holder, Unavailable
from asr_daemon.engine import audio
from asr_daemon.jobs import speakers
from asr_daemon.jobs.speakers import MAX_KNOWN

FIELDS = jobs.DIARIZATION_FIELDS
#: a reference sample's bounds (OpenAI asks for 2-10 s); bytes after base64 decoding
REF_MIN_S, REF_MAX_S, REF_MAX_BYTES = 1.0, 10.0, 2 << 20
#: what `engine.speaker_label` makes for the first 702 speakers: never a known speaker's name
_LABEL = re.compile(r"[A-Z]{1,2}")
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[\w.-]+)*;base64,(?P<data>.*)$", re.DOTALL)


def _count(form: Mapping[str, list[str]], name: str) -> int | None:
    values = form.get(name) or []
    if not values or values[0] == "":
        return None
    if len(set(values)) > 1:
        raise jobs.Invalid(f"field {name!r} was given more than once with different values")
    try:
        value = int(values[0])
    except ValueError:
        raise jobs.Invalid(f"{name} must be a whole number, not {values[0][:40]!r}") from None
    if not 1 <= value <= MAX_SPEAKERS:
        raise jobs.Invalid(f"{name} must be between 1 and {MAX_SPEAKERS}, not {value}")
    return value


def _list(form: Mapping[str, list[str]], name: str) -> list[str]:
    return [*form.get(name + "[]", []), *form.get(name, [])]


def parse(form: Mapping[str, list[str]], req: jobs.Request, *, only: bool = False) -> jobs.Request:
    """`req` with its diarization options set from the form (unchanged when diarization is not asked for)."""
    raw = (form.get("diarize") or [""])[0].strip().lower()
    if raw not in {"", "true", "false", "1", "0", "yes", "no", "on", "off"}:
        raise jobs.Invalid(f"diarize must be true or false, not {raw[:40]!r}")
    wanted = only or raw in {"true", "1", "yes", "on"} or req.response_format in ("diarized_json", "rttm")
    num, lo, hi = (_count(form, f) for f in ("num_speakers", "min_speakers", "max_speakers"))
    names, refs = _list(form, "known_speaker_names"), _list(form, "known_speaker_references")
    if not wanted:
        if num or lo or hi or names or refs:
            raise jobs.Invalid("num_speakers, min/max_speakers and known speakers need diarize=true")
        return req
    if lo and hi and lo > hi:
        raise jobs.Invalid(f"min_speakers ({lo}) is more than max_speakers ({hi})")
    if num and ((lo and num < lo) or (hi and num > hi)):
        raise jobs.Invalid("num_speakers is outside min_speakers..max_speakers")
    if len(names) != len(refs):
        raise jobs.Invalid("known_speaker_names[] and known_speaker_references[] must pair up one to one")
    if len(names) > MAX_KNOWN:
        raise jobs.Invalid(f"at most {MAX_KNOWN} known speakers")
    cleaned = [speakers.clean_name(n) for n in names]
    if None in cleaned:
        raise jobs.Invalid(f"each known_speaker_names[] entry must be 1 to {speakers.MAX_NAME} characters on one line")
    names = [n for n in cleaned if n is not None]
    if len({n.casefold() for n in names}) != len(names):
        raise jobs.Invalid("known_speaker_names[] must be distinct")
    label_like = next((n for n in names if _LABEL.fullmatch(n)), None)
    if label_like is not None:
        raise jobs.Invalid(f"{label_like!r} is how an unnamed speaker is labelled (A, B, …): give known speakers names")
    if req.stream and only:
        raise jobs.Invalid("stream is not available for /v1/audio/diarization")
    known = tuple(jobs.KnownSpeaker(n, reference=r) for n, r in zip(names, refs, strict=True))
    spec = jobs.DiarizationOptions(num_speakers=num, min_speakers=lo, max_speakers=hi, only=only, known=known)
    return dataclasses.replace(req, options=dataclasses.replace(req.options, diarization=spec))


def _decode_reference(name: str, url: str) -> bytes:
    m = _DATA_URL.match(url.strip())
    if m is None:
        raise jobs.Invalid(f"the reference for {name!r} is not a base64 data URL (data:audio/wav;base64,...)")
    if m["type"] and not m["type"].startswith(("audio/", "video/", "application/octet-stream")):
        raise jobs.Invalid(f"the reference for {name!r} is {m['type'][:40]}, not audio")
    if len(m["data"]) > REF_MAX_BYTES * 4 // 3 + 8:
        raise jobs.Invalid(f"the reference for {name!r} is larger than {REF_MAX_BYTES >> 20} MB")
    try:
        return base64.b64decode(m["data"], validate=True)
    except (binascii.Error, ValueError):
        raise jobs.Invalid(f"the reference for {name!r} is not valid base64") from None


def embed_known(req: jobs.Request, holder: Holder, tmp_dir: Path) -> jobs.Request:
    """Decode, check and embed the known speakers' references (blocking: run in a thread)."""
    spec = req.options.diarization
    if spec is None or not spec.known:
        return req
    known = []
    for entry in spec.known:
        if entry.embedding is not None:  # embedded already
            known.append(entry)
            continue
        data = _decode_reference(entry.name, entry.reference or "")
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="ref-") as f:
            f.write(data)
            f.flush()
            try:
                info = audio.probe(Path(f.name), audio.Limits(REF_MAX_S * 3))
            except Exception as exc:  # any failure to decode means "not audio we can read"
                raise jobs.Invalid(f"the reference for {entry.name!r} is not audio we can read") from exc
            if not REF_MIN_S <= info.duration <= REF_MAX_S:
                raise jobs.Invalid(
                    f"the reference for {entry.name!r} lasts {info.duration:.1f} s: "
                    f"give {REF_MIN_S:g} to {REF_MAX_S:g} s"
                )
            try:
                wav = audio.decode(Path(f.name), info.duration * 1.05 + 1)
            except errors.JobFailed:
                raise jobs.Invalid(
                    f"the reference for {entry.name!r} decodes to more than its file declares: re-encode it"
                ) from None
            except Exception as exc:  # any failure to decode means "not audio we can read"
                raise jobs.Invalid(f"the reference for {entry.name!r} is not audio we can read") from exc
        try:
            with holder.use() as eng:
                if eng.name != "resemblyzer":
                    raise jobs.Invalid(
                        f"known speakers need voice embeddings, which the {eng.name} engine does not give"
                    )
                vector = eng.embed(wav)
        except Unavailable as exc:
            raise jobs.Invalid(f"known speakers are unavailable here: {exc}") from None
        if vector is None:
            raise jobs.Invalid(f"no speech found in the reference for {entry.name!r}")
        blob = base64.b64encode(vector.astype(np.float16).tobytes()).decode()
        known.append(jobs.KnownSpeaker(entry.name, embedding=blob))
    spec = dataclasses.replace(spec, known=tuple(known))
    return dataclasses.replace(req, options=dataclasses.replace(req.options, diarization=spec))


def _check_loads(holder: Holder) -> None:
    """Load the engine (one use, so its idle timer is armed after): raises `Unavailable` when it cannot."""
    with holder.use():
        pass


async def prepare(req: jobs.Request, holder: Holder, tmp_dir: Path) -> jobs.Request:
    """Load the engine (a 503 when it cannot load here) and run `embed_known` off the event loop (400s)."""
    if req.options.diarization is None:
        return req
    try:
        await asyncio.to_thread(_check_loads, holder)
    except Unavailable as exc:
        raise errors.Unavailable(f"diarization is not available on this server: {exc}") from None
    if not req.options.diarization.known:
        return req
    try:
        return await asyncio.to_thread(embed_known, req, holder, tmp_dir)
    except jobs.Invalid as exc:
        raise errors.BadRequest(str(exc)) from None


def known_vectors(spec: jobs.DiarizationOptions) -> list[tuple[str, np.ndarray]]:
    """(name, unit embedding) of each known speaker of stored options (one never embedded is left out)."""
    out = []
    for k in spec.known:
        if k.embedding is None:
            continue
        v = np.frombuffer(base64.b64decode(k.embedding), dtype=np.float16).astype(np.float32)
        out.append((k.name, v / max(float(np.linalg.norm(v)), 1e-9)))
    return out
