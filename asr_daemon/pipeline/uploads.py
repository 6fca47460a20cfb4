"""Uploads: stream a multipart body to disk while hashing it, never holding the file in memory.

The file part goes to `uploads/tmp/<random>.part`; once it is probed and a job row is about to be
written it is renamed to `uploads/<sha256>` (content-addressed: the same audio is stored once).
Anything that goes wrong removes the partial file, so bad input leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from asr_daemon import checksums, errors
from asr_daemon.jobs.speakers import MAX_KNOWN

MAX_FIELD_BYTES = 64 * 1024
#: fields that carry data may be larger (issue 19: known speakers' audio samples as base64 data URLs)
LARGE_FIELDS = {"known_speaker_references[]": 3 << 20, "known_speaker_references": 3 << 20}
#: how many values each of those may have (more is refused as it arrives, not after 64 × 3 MiB were held)
LARGE_FIELD_VALUES = MAX_KNOWN
MAX_FIELDS = 64
FLUSH_BYTES = 1 << 20
FILE_FIELD = "file"

#: `on_field(name, values)`: checks a form field as soon as it has arrived (`values`: all of that name so
#: far) and raises a domain error to refuse the request before the rest of the body is stored
FieldCheck = Callable[[str, list[str]], Awaitable[None]]


class AudioLocks:
    """Per-hash locks that serialise storing and deleting (retention) the file of one audio."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, sha256: str) -> asyncio.Lock:
        """The lock of one audio hash."""
        return self._locks.setdefault(sha256, asyncio.Lock())


@dataclass
class Upload:
    """A received multipart body: the form fields and the file on disk (if one was sent)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    path: Path | None = None
    filename: str | None = None
    size: int = 0
    sha256: str = ""

    def discard(self) -> None:
        """Remove the temporary file."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


class _Sink:
    """Collects parser callbacks; the file part is buffered and flushed to disk in a thread."""

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.hasher = hashlib.sha256()
        self.fh: BinaryIO | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self._headers: dict[str, str] = {}
        self._hname = b""
        self._hvalue = b""
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()
        self._field_count = 0
        #: the closing boundary was read: a body cut short (a client that stopped mid-file) never sets it
        self.ended = False
        self.arrived: list[str] = []  # names of fields complete since the last check

    # parser callbacks (synchronous, called from feed())
    def on_part_begin(self) -> None:
        self._headers, self._name, self._is_file, self._value = {}, None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        # latin-1 maps bytes 1:1, so parse_options_header gets the raw bytes back and UTF-8 filenames
        # (what browsers send) survive; decoding as UTF-8 here made any non-Latin-1 filename a 500
        self._headers[self._hname.decode("latin-1").lower()] = self._hvalue.decode("latin-1")
        self._hname, self._hvalue = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        raw_name = params.get(b"name")
        if raw_name is None:
            raise errors.BadRequest("a multipart part has no name in its Content-Disposition header")
        self._name = raw_name.decode("utf-8", "replace")
        self._is_file = self._name == FILE_FIELD
        if self._is_file:
            if self.upload.path is not None:
                raise errors.BadRequest("more than one 'file' part: send exactly one audio file")
            raw_fn = params.get(b"filename")
            fn = raw_fn.decode("utf-8", "replace") if raw_fn else None
            self.upload.filename = _clean_filename(fn)
            self.upload.path = self.tmp_dir / f"{uuid.uuid4().hex}.part"
            # no inode left (ENOSPC) names the file: api/app.py answers 507 for it like for any full disk
            self.fh = open(self.upload.path, "wb")  # noqa: SIM115  # closed in close(); tiny syscall
        else:
            self._field_count += 1
            if self._field_count > MAX_FIELDS:
                raise errors.BadRequest(f"too many form fields (more than {MAX_FIELDS})")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.upload.size += len(chunk)
            if self.upload.size > self.max_bytes:
                raise errors.TooLarge(
                    f"the file is larger than {self.max_bytes} bytes, the most this server accepts "
                    "(ASR_MAX_UPLOAD_BYTES)"
                )
            self.pending.append(chunk)
            self.pending_bytes += len(chunk)
        else:
            self._value += chunk
            limit = LARGE_FIELDS.get(self._name or "", MAX_FIELD_BYTES)
            if len(self._value) > limit:
                raise errors.BadRequest(f"form field {self._name!r:.60} is longer than {limit} bytes")

    def on_part_end(self) -> None:
        if not self._is_file and self._name is not None:
            if self._name in LARGE_FIELDS and len(self.upload.fields.get(self._name, ())) >= LARGE_FIELD_VALUES:
                raise errors.BadRequest(f"at most {LARGE_FIELD_VALUES} values of {self._name!r} (known speakers)")
            if b"\x00" in self._value:  # PostgreSQL text cannot hold it: refused here, not a 500 at the insert
                raise errors.BadRequest(f"form field {self._name!r:.60} contains a NUL character: send plain text")
            self.upload.fields.setdefault(self._name, []).append(self._value.decode("utf-8", "replace"))
            self.arrived.append(self._name)

    def on_end(self) -> None:
        self.ended = True

    async def check_arrived(self, on_field: FieldCheck | None) -> None:
        """Run `on_field` on the fields completed since the last call (before any more is written)."""
        while self.arrived:
            name = self.arrived.pop(0)
            if on_field is not None:
                await on_field(name, self.upload.fields[name])

    # disk side (runs in a thread)
    def flush(self) -> None:
        if not self.pending or self.fh is None:
            self.pending, self.pending_bytes = [], 0
            return
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        self.hasher.update(data)
        try:
            self.fh.write(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise errors.InsufficientStorage("the server's disk is full: the upload cannot be stored") from None
            raise

    def close(self) -> None:
        if self.fh is not None:
            try:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise errors.InsufficientStorage("the server's disk is full: the upload cannot be stored") from None
                raise
            finally:
                self.fh.close()
                self.fh = None

    def abandon(self) -> None:
        """Close a file about to be deleted: no flush to disk (an fsync of a refused gigabyte on the event
        loop stalled every other client for up to a second)."""
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None


def _clean_filename(name: str | None) -> str | None:
    """Keep only the last path component, without control characters, at most 255 characters."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:255] or None


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a Content-Type header, or a 400/415 saying what is wrong."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise errors.UnsupportedMedia(
            f"send the audio as multipart/form-data with a 'file' field (got Content-Type {content_type[:80]!r})"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise errors.BadRequest("the multipart/form-data Content-Type has no boundary")
    return boundary


async def receive(
    body: AsyncIterator[bytes],
    content_type: str,
    tmp_dir: Path,
    max_bytes: int,
    *,
    idle_timeout: float | None = None,
    total_timeout: float | None = None,
    on_field: FieldCheck | None = None,
) -> Upload:
    """Parse a multipart body from `body`, streaming the 'file' part to `tmp_dir`.

    Each form field goes to `on_field` as soon as it is complete, before the chunk that ended it is
    written: a field sent before the file (as httpx, the OpenAI SDK and browsers do) is refused before
    the body is stored, one sent after it as soon as it arrives. Whatever it raises ends the upload.
    Raises a domain error (and leaves no file) on a malformed body or an oversized file, and
    `RequestTimeout` when no byte arrives for `idle_timeout` seconds or the whole body takes longer
    than `total_timeout` (so a stalled or trickling client cannot hold the upload forever).
    """
    boundary = boundary_of(content_type)
    await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
    sink = _Sink(tmp_dir, max_bytes)
    # part headers up to 64 KiB: a long (e.g. 10 kB of unicode) filename is cut to 255 characters, not refused
    callbacks: Any = _callbacks(sink)  # python-multipart wants a TypedDict of callables
    parser = MultipartParser(boundary, callbacks=callbacks, max_header_size=MAX_FIELD_BYTES)
    try:
        async for chunk in _timed(body, idle_timeout, total_timeout):
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise errors.BadRequest(f"the multipart body is malformed: {exc}") from None
            await sink.check_arrived(on_field)
            if sink.pending_bytes >= FLUSH_BYTES:
                await asyncio.to_thread(sink.flush)
        try:
            parser.finalize()
        except MultipartParseError as exc:
            raise errors.BadRequest(f"the multipart body is malformed: {exc}") from None
        if not sink.ended:  # the request ended mid-part: what arrived is not the whole file
            raise errors.BadRequest(
                "the multipart body ended before its closing boundary: the upload is incomplete, send it again"
            )
        await sink.check_arrived(on_field)
        await asyncio.to_thread(sink.flush)
        await asyncio.to_thread(sink.close)
    except BaseException:
        sink.abandon()
        sink.upload.discard()
        raise
    sink.upload.sha256 = sink.hasher.hexdigest()
    return sink.upload


async def _timed(
    body: AsyncIterator[bytes], idle_timeout: float | None, total_timeout: float | None
) -> AsyncIterator[bytes]:
    """`body`'s chunks, each awaited at most `idle_timeout` s and all within `total_timeout` s."""
    if idle_timeout is None and total_timeout is None:
        async for chunk in body:
            yield chunk
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout if total_timeout is not None else None
    it = aiter(body)
    while True:
        wait = idle_timeout
        if deadline is not None:
            left = deadline - loop.time()
            wait = left if wait is None else min(wait, left)
        try:
            chunk = await asyncio.wait_for(anext(it), max(wait or 0.0, 0.0))
        except StopAsyncIteration:
            return
        except TimeoutError:
            overall = deadline is not None and loop.time() >= deadline
            raise errors.RequestTimeout(
                f"the upload took longer than {total_timeout:g} s (ASR_UPLOAD_TIMEOUT)"
                if overall
                else f"the upload stalled: nothing arrived for {idle_timeout:g} s (ASR_UPLOAD_IDLE_TIMEOUT)"
            ) from None
        yield chunk


def _callbacks(sink: _Sink) -> dict[str, Any]:
    return {
        name: getattr(sink, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_end",
        )
    }


def commit(upload: Upload, uploads_dir: Path) -> tuple[Path, bool]:
    """Move the temporary file to `uploads/<sha256>`; returns (path, created). Blocking."""
    assert upload.path is not None
    final = uploads_dir / upload.sha256
    if final.exists():
        upload.discard()
        # reused: its age starts over, so the orphan sweep's grace period covers the row insert to come
        with contextlib.suppress(FileNotFoundError):
            os.utime(final)
        return final, False
    os.replace(upload.path, final)
    upload.path = None
    # the rename itself must reach the disk before the job row is committed: after a power loss a
    # committed row must never point at a file that is not there
    checksums.fsync(uploads_dir)
    return final, True
