"""Byte ranges and audio media types of GET /v1/jobs/{id}/audio, and the ASR_CORS_ORIGINS setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from asr_daemon.api import cors, media
from asr_daemon.config import Settings


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=90-500", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        (" bytes = 5 - 6 ", 100, (5, 6)),
        ("bytes=9-3", 100, None),  # invalid: ignored, the whole file
        ("bytes=0-1,5-6", 100, None),  # several ranges: the whole file
        ("items=0-9", 100, None),
        ("bytes=-", 100, None),
        ("bytes=0-" + "9" * 5000, 100, None),  # past Python's int() digit limit: ignored, not a 500
    ],
)
def test_byte_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    """One range as RFC 9110 reads it (suffix, open end, clipped end); anything else means the whole file."""
    assert media.byte_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=200-300", 100), ("bytes=-0", 100)])
def test_ranges_past_the_end_are_unsatisfiable(header: str, size: int) -> None:
    """A range starting at or past the end (or an empty suffix) is a 416."""
    with pytest.raises(media.Unsatisfiable):
        media.byte_range(header, size)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"fLaC\x00\x00\x00\x22", "audio/flac"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x00", "audio/mpeg"),
        (b"\xff\xf1\x50\x80", "audio/aac"),
        (b"\x1a\x45\xdf\xa3\x9f", "audio/webm"),
        (b"\x00\x00\x00\x20ftypM4A ", "audio/mp4"),
        (b"<html>", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_media_type_from_the_first_bytes(tmp_path: Path, head: bytes, kind: str) -> None:
    """Stored audio has no name: its type comes from its magic bytes; unknown is octet-stream."""
    path = tmp_path / "a"
    path.write_bytes(head + b"\x00" * 32)
    if not head:
        path.write_bytes(b"")
    assert media.media_type(path) == kind


def test_cors_origins_are_parsed_and_checked() -> None:
    """A comma-separated list of origins (or `*`) is accepted; empty means no CORS at all; a path or
    another scheme is refused at start-up, naming the variable."""
    s = Settings(cors_origins=" https://app.example.org , http://localhost:5173/ ")
    assert cors.origins(s) == ["https://app.example.org", "http://localhost:5173"]
    config = cors.config(s)
    assert config is not None and not config.allow_credentials and "authorization" in config.allow_headers
    assert cors.config(Settings()) is None
    assert cors.origins(Settings(cors_origins="*")) == ["*"]
    for bad in ("ftp://x.example", "https://x.example/path", "x.example", "https://a.example;b"):
        with pytest.raises(ValidationError, match="cors_origins"):
            Settings(cors_origins=bad)
