"""Serving stored audio: its media type from the file's first bytes, and HTTP byte ranges (RFC 9110 §14).

Uploads are stored under their SHA-256 without a name or extension, so the type a player needs is
read from the magic bytes of the formats browsers play; anything else is application/octet-stream.
"""

from __future__ import annotations

import re
from pathlib import Path

#: (offset, magic, media type); the first that matches wins
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"\x1a\x45\xdf\xa3", "audio/webm"),  # Matroska/WebM: what MediaRecorder records in Chromium
    (4, b"ftyp", "audio/mp4"),
    (0, b"#!AMR", "audio/amr"),
)
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*$")  # longer: no file is that big


def media_type(path: Path) -> str:
    """The audio media type of the file at `path`, judged by its first bytes."""
    with path.open("rb") as fh:
        head = fh.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio/aac"  # ADTS
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"  # an MPEG audio frame without an ID3 tag
    return "application/octet-stream"


class Unsatisfiable(ValueError):
    """The range asks for bytes past the end of the file (416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [first, last] bytes (inclusive) a `Range` header asks for, or None for the whole file.

    One range only (players ask for one); several ranges, or a header that is not a byte range, are
    ignored as RFC 9110 allows (the whole file is sent). Raises `Unsatisfiable` when it starts past
    the end.
    """
    if not header or "," in header:
        return None
    m = _RANGE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first_s, last_s = m.groups()
    if not first_s:  # a suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - n), size - 1
    first = int(first_s)
    if first >= size:
        raise Unsatisfiable(header)
    last = int(last_s) if last_s else size - 1
    if last < first:
        return None
    return first, min(last, size - 1)
