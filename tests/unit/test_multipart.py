"""uploads.receive, the streaming multipart parser, in process: chunk splits, part order, bounds, malformed input."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from asr_daemon import errors
from asr_daemon.pipeline import uploads

BOUNDARY = "----asrBoundary7MA4YWxkTrZu0gW"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"
#: file bytes full of what a parser might mistake for a boundary: CR, LF, dashes, the boundary's prefix
TRICKY = b"\r\n--\r\n\r--" + BOUNDARY[:-1].encode() + b"x\r\n-\r\n" + bytes(range(256)) + b"\r\n"


def part(name: str, value: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    """One multipart part (headers, blank line, value, CRLF) after its boundary line."""
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def body(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """A whole multipart body: preamble, parts, closing boundary, epilogue."""
    return preamble + b"".join(parts) + f"--{BOUNDARY}--\r\n".encode() + epilogue


async def chunks(data: Iterable[bytes], read: list[int] | None = None) -> AsyncIterator[bytes]:
    """`data` as a request stream; `read` counts the bytes handed out."""
    for chunk in data:
        if read is not None:
            read.append(len(chunk))
        yield chunk


def receive(data: Iterable[bytes], tmp: Path, max_bytes: int = 1 << 20, **kw: object) -> uploads.Upload:
    """Run uploads.receive on `data` (chunks) to `tmp`."""
    return asyncio.run(uploads.receive(chunks(data), CTYPE, tmp, max_bytes, **kw))  # type: ignore[arg-type]  # kw: the keyword options


STANDARD = body(
    part("model", b"tiny.en"),
    part("language", b"en"),
    part("file", TRICKY, "a.wav", "audio/wav"),
    part("response_format", b"text"),
)


def check(up: uploads.Upload, file: bytes = TRICKY) -> None:
    """`up` holds the STANDARD body's fields and file, hashed as stored."""
    assert up.fields == {"model": ["tiny.en"], "language": ["en"], "response_format": ["text"]}
    assert up.path is not None and up.path.read_bytes() == file
    assert (up.size, up.sha256, up.filename) == (len(file), hashlib.sha256(file).hexdigest(), "a.wav")
    up.discard()


def test_a_body_split_at_every_offset_parses_the_same(tmp_path: Path) -> None:
    """A chunk boundary at any byte (inside a boundary line, a CRLF, a header, the file) changes nothing."""
    for cut in range(1, len(STANDARD)):
        check(receive([STANDARD[:cut], STANDARD[cut:]], tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_body_sent_one_byte_at_a_time_parses_the_same(tmp_path: Path) -> None:
    """Single-byte chunks (a trickling client) give the same fields and file."""
    check(receive([STANDARD[i : i + 1] for i in range(len(STANDARD))], tmp_path))


def test_fields_after_the_file_are_kept_and_checked(tmp_path: Path) -> None:
    """A field sent after the file still arrives, and goes to on_field after the file's bytes."""
    seen: list[str] = []

    async def on_field(name: str, values: list[str]) -> None:
        seen.append(name)

    check(receive([STANDARD], tmp_path, on_field=on_field))
    assert seen == ["model", "language", "response_format"]


def test_a_field_refused_before_the_file_stops_the_upload_before_storing(tmp_path: Path) -> None:
    """on_field raising for a field sent first ends the upload at once: the rest of a large body is not
    read, and no file is left."""
    head = part("model", b"nope") + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode()
    read: list[int] = []

    async def on_field(name: str, values: list[str]) -> None:
        raise errors.BadRequest(f"bad {name}")

    def stream() -> Iterable[bytes]:
        yield head
        for _ in range(3200):  # 200 MiB of audio, never produced in full
            yield bytes(64 << 10)

    with pytest.raises(errors.BadRequest, match="bad model"):
        asyncio.run(uploads.receive(chunks(stream(), read), CTYPE, tmp_path, 1 << 30, on_field=on_field))
    assert sum(read) < 1 << 20
    assert list(tmp_path.iterdir()) == []


def test_a_field_refused_after_the_file_removes_the_stored_part(tmp_path: Path) -> None:
    """A bad field after the file (flushed to disk already) leaves no file behind."""
    big = bytes(3 << 20)  # past FLUSH_BYTES: written before the field arrives
    data = body(part("file", big, "a.wav"), part("model", b"nope"))

    async def on_field(name: str, values: list[str]) -> None:
        raise errors.BadRequest("no")

    with pytest.raises(errors.BadRequest):
        receive([data[i : i + 65536] for i in range(0, len(data), 65536)], tmp_path, 8 << 20, on_field=on_field)
    assert list(tmp_path.iterdir()) == []


def test_repeated_fields_reach_on_field_with_every_value_so_far(tmp_path: Path) -> None:
    """A field given twice is checked each time with all its values (so a conflict is seen at once)."""
    calls: list[tuple[str, list[str]]] = []

    async def on_field(name: str, values: list[str]) -> None:
        calls.append((name, list(values)))

    first, second = part("include[]", b"a"), part("include[]", b"b")
    up = receive([first, second, body()], tmp_path, on_field=on_field)  # each part ends in a later chunk
    assert calls == [("include[]", ["a"]), ("include[]", ["a", "b"])]
    assert up.path is None


def test_a_huge_field_is_refused_and_a_large_reference_is_not(tmp_path: Path) -> None:
    """A form field over 64 KiB is a 400 naming it; known-speaker references may be up to 3 MiB."""
    with pytest.raises(errors.BadRequest, match="'prompt' is longer than 65536 bytes"):
        receive([body(part("prompt", b"x" * (uploads.MAX_FIELD_BYTES + 1)))], tmp_path)
    ok = receive([body(part("known_speaker_references[]", b"x" * (2 << 20)))], tmp_path)
    assert len(ok.fields["known_speaker_references[]"][0]) == 2 << 20
    assert list(tmp_path.iterdir()) == []


def test_a_body_without_a_file_part_has_no_path(tmp_path: Path) -> None:
    """Only fields: the upload has them and no file (intake answers the 400)."""
    up = receive([body(part("model", b"tiny.en"))], tmp_path)
    assert (up.fields, up.path, up.size) == ({"model": ["tiny.en"]}, None, 0)


def test_an_empty_file_part_is_an_empty_file(tmp_path: Path) -> None:
    """A file part with no bytes is stored empty (intake answers 'the uploaded file is empty')."""
    up = receive([body(part("file", b"", "a.wav"))], tmp_path)
    assert up.path is not None and up.size == 0 and up.path.read_bytes() == b""
    up.discard()


def test_an_epilogue_is_ignored_and_a_preamble_refused(tmp_path: Path) -> None:
    """Text after the closing boundary is not part of anything; text before the first boundary (legal
    in RFC 2046, sent by no HTTP client) is a 400 from python-multipart, with nothing kept."""
    data = body(
        part("model", b"tiny.en"),
        part("language", b"en"),
        part("file", TRICKY, "a.wav"),
        part("response_format", b"text"),
        epilogue=b"an epilogue\r\n--" + BOUNDARY.encode() + b"\r\n",
    )
    check(receive([data], tmp_path))
    with pytest.raises(errors.BadRequest, match="malformed"):
        receive([b"This is a preamble.\r\n" + data], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_values_with_crlf_keep_their_line_breaks(tmp_path: Path) -> None:
    """CRLF inside a value is data (only CRLF + boundary ends a part); the file's last CRLF is kept."""
    up = receive([body(part("prompt", b"one\r\ntwo\r\n"), part("file", b"\r\n\r\n", "a"))], tmp_path)
    assert up.fields["prompt"] == ["one\r\ntwo\r\n"]
    assert up.path is not None and up.path.read_bytes() == b"\r\n\r\n"
    up.discard()


def test_a_part_without_a_name_is_a_400(tmp_path: Path) -> None:
    """A Content-Disposition without name= (or no Content-Disposition at all) is refused, nothing kept."""
    nameless = f'--{BOUNDARY}\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n'.encode()
    bare = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n".encode()
    for bad in (nameless, bare):
        with pytest.raises(errors.BadRequest, match="no name in its Content-Disposition"):
            receive([body(part("file", b"abc", "a"), bad)], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_second_file_part_is_a_400(tmp_path: Path) -> None:
    """Two 'file' parts are refused and the first one's file removed."""
    with pytest.raises(errors.BadRequest, match="more than one 'file' part"):
        receive([body(part("file", b"abc", "a"), part("file", b"def", "b"))], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_malformed_framing_is_a_400(tmp_path: Path) -> None:
    """A part header line without a colon is a 400 'the multipart body is malformed'."""
    bad = f"--{BOUNDARY}\r\nnot a header\r\n\r\nx\r\n".encode()
    with pytest.raises(errors.BadRequest, match="malformed"):
        receive([body(bad)], tmp_path)


def test_too_many_fields_is_a_400(tmp_path: Path) -> None:
    """More than MAX_FIELDS form fields are refused."""
    many = [part(f"f{i}", b"1") for i in range(uploads.MAX_FIELDS + 1)]
    with pytest.raises(errors.BadRequest, match="too many form fields"):
        receive([body(*many)], tmp_path)


def test_an_oversized_file_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    """A file one byte over the bound is TooLarge, and its partial file is removed."""
    with pytest.raises(errors.TooLarge):
        receive([body(part("file", bytes(1001), "a"))], tmp_path, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []
    up = receive([body(part("file", bytes(1000), "a"))], tmp_path, max_bytes=1000)
    assert up.size == 1000
    up.discard()


def test_filenames_keep_only_their_last_component(tmp_path: Path) -> None:
    """A path in the filename is cut to its last component; UTF-8 survives; control characters go."""
    up = receive([body(part("file", b"x", "C:\\dir\\..\\../sp\u00e9ech\x07.wav"))], tmp_path)
    assert up.filename == "sp\u00e9ech.wav"
    up.discard()


@pytest.mark.parametrize(
    ("ctype", "error"),
    [
        ("application/json", errors.UnsupportedMedia),
        ("multipart/form-data", errors.BadRequest),
        ("", errors.UnsupportedMedia),
    ],
)
def test_the_content_type_must_be_multipart_with_a_boundary(tmp_path: Path, ctype: str, error: type) -> None:
    """Not multipart is a 415; multipart without a boundary is a 400."""
    with pytest.raises(error):
        asyncio.run(uploads.receive(chunks([STANDARD]), ctype, tmp_path, 1 << 20))


def test_a_stalled_body_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    """No byte for idle_timeout seconds is a RequestTimeout, the partial file removed."""

    async def stall() -> AsyncIterator[bytes]:
        yield STANDARD[: len(STANDARD) // 2]
        await asyncio.sleep(10)
        yield STANDARD[len(STANDARD) // 2 :]

    with pytest.raises(errors.RequestTimeout, match="stalled"):
        asyncio.run(uploads.receive(stall(), CTYPE, tmp_path, 1 << 20, idle_timeout=0.2))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", [len(STANDARD) - len(f"--{BOUNDARY}--\r\n"), len(STANDARD) // 2, 10])
def test_a_body_cut_short_is_a_400_and_leaves_nothing(tmp_path: Path, cut: int) -> None:
    """A body that ends before its closing boundary (a client that stopped mid-file) is refused, not
    stored as if the truncated file were the whole audio."""
    with pytest.raises(errors.BadRequest, match=r"closing boundary|malformed"):
        receive([STANDARD[:cut]], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_nul_in_a_text_field_is_a_400_naming_it(tmp_path: Path) -> None:
    """A NUL character in a field (PostgreSQL text cannot hold one) is refused naming the field, not a 500."""
    with pytest.raises(errors.BadRequest, match="'prompt' contains a NUL"):
        receive([body(part("file", b"RIFF", "a.wav"), part("prompt", b"hello\x00world"))], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_known_speaker_references_are_bounded_in_number_as_they_arrive(tmp_path: Path) -> None:
    """A fifth 3 MiB reference is refused when it arrives (not after 64 of them were held in memory)."""
    refs = [part("known_speaker_references[]", b"x" * 1000) for _ in range(uploads.LARGE_FIELD_VALUES + 1)]
    with pytest.raises(errors.BadRequest, match="at most 4 values"):
        receive([body(*refs)], tmp_path)
    ok = receive([body(*refs[:-1])], tmp_path)
    assert len(ok.fields["known_speaker_references[]"]) == uploads.LARGE_FIELD_VALUES


def test_a_refused_upload_is_deleted_without_being_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The partial file of a refused upload is removed without an fsync (which blocked the event loop for
    up to a second on a refused gigabyte); an accepted one is synced."""
    synced: list[int] = []
    monkeypatch.setattr(uploads.os, "fsync", lambda fd: synced.append(fd))
    with pytest.raises(errors.TooLarge):
        receive([body(part("file", bytes(3 << 20), "a"))], tmp_path, max_bytes=2 << 20)
    assert synced == [] and list(tmp_path.iterdir()) == []
    receive([body(part("file", bytes(1000), "a"))], tmp_path).discard()
    assert len(synced) == 1
