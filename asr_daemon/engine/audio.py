"""Audio files: check an upload is decodable audio, and stream it as 16 kHz mono samples.

The stream reproduces faster-whisper's `decode_audio` exactly (same resampler, same frame
grouping), so transcribing its concatenation gives the same text as handing faster-whisper the
file, while a long file never has to be held in memory whole.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from asr_daemon import errors

SAMPLE_RATE = 16000
_GROUP = 500000  # samples per resampler call, as in faster_whisper.audio.decode_audio


@dataclass(frozen=True)
class Info:
    """What probing found out about an upload."""

    duration: float
    channels: int
    sample_rate: int
    codec: str
    container: str


@dataclass(frozen=True)
class Limits:
    """What an accepted file may hold (the settings of the same names; None: no bound)."""

    max_seconds: float | None = None
    max_channels: int | None = None
    max_sample_rate: int | None = None
    max_tag_bytes: int | None = None


def probe(path: Path, limits: Limits = Limits()) -> Info:
    """Check `path` holds decodable audio within `limits` and measure its duration; blocking, run it in a thread.

    Demuxes every packet (cheap: nothing is decoded) to measure the real duration and to catch a
    file shorter than its header promises, and decodes the first and last packets to catch a
    corrupt or cut-off stream. Raises `UnsupportedMedia` for what is not audio at all or has more
    channels or a higher rate than `limits` allow, `TooLarge` for audio too long or tags too big,
    and `BadAudio` for audio that is empty, truncated or corrupt.
    """
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        raise errors.UnsupportedMedia("the file is not a recognised audio or video format") from None
    with container:
        if not container.streams.audio:
            raise errors.UnsupportedMedia("the file has no audio track")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        channels = stream.codec_context.channels or 0
        rate = stream.codec_context.sample_rate or 0
        if channels <= 0 or rate <= 0:
            raise errors.BadAudio("the audio track declares no channels or no sample rate")
        _check_limits(container, stream, limits)
        max_seconds = limits.max_seconds
        declared = _declared_seconds(container, stream)
        if container.format.name == "wav":
            declared = max(declared, _wav_declared_seconds(path))
        demuxed, head, tail = _demux(container, stream, max_seconds)
        if max_seconds is not None and demuxed > max_seconds:
            raise errors.TooLarge(
                f"the audio lasts more than {max_seconds:g} s, the longest this server accepts (ASR_MAX_AUDIO_SECONDS)"
            )
        if demuxed <= 0:
            raise errors.BadAudio("the file contains no audio samples")
        if declared and demuxed < declared * 0.9 - 0.5:
            raise errors.BadAudio(
                f"the audio is truncated: its header promises {declared:.1f} s but only {demuxed:.1f} s are present"
            )
        _check_decodes(stream, head, tail)
        if "ogg" in container.format.name.split(","):
            _check_ogg_complete(path)
        return Info(
            duration=demuxed,
            channels=channels,
            sample_rate=rate,
            codec=codec,
            container=container.format.name,
        )


def _check_limits(container: av.container.InputContainer, stream: av.AudioStream, limits: Limits) -> None:
    """Refuse a file whose channels, rate or tags exceed `limits`, before anything is demuxed."""
    channels, rate = stream.codec_context.channels, stream.codec_context.sample_rate
    if limits.max_channels is not None and channels > limits.max_channels:
        raise errors.UnsupportedMedia(
            f"the audio has {channels} channels; this server accepts at most {limits.max_channels} "
            "(ASR_MAX_CHANNELS): mix it down first, e.g. ffmpeg -i IN -ac 1 OUT.flac"
        )
    if limits.max_sample_rate is not None and rate > limits.max_sample_rate:
        raise errors.UnsupportedMedia(
            f"the audio is sampled at {rate} Hz; this server accepts at most {limits.max_sample_rate} Hz "
            "(ASR_MAX_SAMPLE_RATE): resample it first, e.g. ffmpeg -i IN -ar 16000 OUT.flac"
        )
    if limits.max_tag_bytes is not None:
        tags = [*container.metadata.items(), *stream.metadata.items()]
        size = sum(len(k.encode()) + len(v.encode()) for k, v in tags)
        if size > limits.max_tag_bytes:
            raise errors.TooLarge(
                f"the file carries {size / 1024:.0f} KiB of metadata tags; this server accepts at most "
                f"{limits.max_tag_bytes / 1024:.0f} KiB (ASR_MAX_TAG_BYTES): strip them first, "
                "e.g. ffmpeg -i IN -map_metadata -1 -c copy OUT"
            )


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return 0.0


def _wav_declared_seconds(path: Path) -> float:
    """Seconds a WAV's `data` chunk header promises (libav clamps its duration to the file size)."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0.0
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if cid == b"fmt " and pos + 20 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
        elif cid == b"data":
            streaming = size in (0, 0xFFFFFFFF)  # written by a pipe that could not seek back
            return 0.0 if streaming or not byte_rate else size / byte_rate
        pos += 8 + size + (size & 1)
    return 0.0


def _demux(
    container: av.container.InputContainer, stream: av.AudioStream, max_seconds: float | None
) -> tuple[float, list[Any], collections.deque[Any]]:
    """Total seconds of the packets of `stream`, its first packets and its last packets."""
    total = 0.0
    head: list[Any] = []
    tail: collections.deque[Any] = collections.deque(maxlen=8)
    base = stream.time_base
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.duration and base is not None:
                total += float(packet.duration * base)
            elif stream.codec_context.sample_rate and packet.pts is not None and base is not None:
                total = max(total, float(packet.pts * base))
            if len(head) < 8:
                head.append(packet)
            else:
                tail.append(packet)
            if max_seconds is not None and total > max_seconds:
                break
    except av.FFmpegError:
        raise errors.BadAudio("the audio is corrupt: its container cannot be read to the end") from None
    return total, head, tail


def _check_ogg_complete(path: Path) -> None:
    """An Ogg file cut off mid-page demuxes without complaint: check the last page is whole."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - 65536 - 282))  # the largest Ogg page is 27 + 255 + 255 * 255 bytes
        tail = fh.read()
    at = tail.rfind(b"OggS")
    while at > 0 and at + 4 < len(tail) and tail[at + 4] != 0:  # version 0: not a page start
        at = tail.rfind(b"OggS", 0, at)
    if at < 0 or at + 27 > len(tail) or at + _ogg_page_len(tail[at:]) > len(tail):
        raise errors.BadAudio("the audio is truncated: the file ends in the middle of an Ogg page")


def _ogg_page_len(page: bytes) -> int:
    """Length in bytes of the Ogg page starting at `page[0]` (header, lacing table and body)."""
    n_segments = page[26]
    lacing = page[27 : 27 + n_segments]
    if len(lacing) < n_segments:
        return 27 + n_segments  # the lacing table itself is cut off
    return 27 + n_segments + sum(lacing)


def _check_decodes(stream: av.AudioStream, head: list[Any], tail: collections.deque[Any]) -> None:
    """Decode the first and last packets: they must decode, and to no more audio than they claim
    (a container whose timestamps shrink the audio would pass the duration limit and jump the queue)."""
    ctx = stream.codec_context
    decoded = 0
    claimed, known = 0.0, stream.time_base is not None
    for packet in itertools.chain(head, tail):
        if packet.duration and stream.time_base is not None:
            claimed += float(packet.duration * stream.time_base)
        else:
            known = False
        try:
            decoded += sum(f.samples for f in ctx.decode(packet))
        except av.FFmpegError:
            raise errors.BadAudio("the audio is corrupt or truncated: a frame cannot be decoded") from None
    if decoded == 0 and len(head) + len(tail) >= 4:
        raise errors.BadAudio("the audio is corrupt: no frame decodes to any sample")
    rate = ctx.sample_rate or 0
    if known and rate and decoded / rate > 2 * claimed + 0.1:
        raise errors.BadAudio(
            f"the file's timestamps disagree with its audio: packets that claim {claimed:.3f} s decode to "
            f"{decoded / rate:.3f} s (re-encode or re-mux it)"
        )


def _ignore_invalid(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


def longer_than_declared(max_s: float) -> errors.JobFailed:
    """The error of audio that decodes to more than `max_s` seconds: its container lied about its
    length when it was probed (the limits were checked against that length)."""
    return errors.JobFailed(
        f"the audio decodes to more than {max_s:.0f} s although its file declared less; "
        "re-encode it and submit it again"
    )


def stream(path: Path, max_s: float | None = None) -> Iterator[np.ndarray]:
    """Yield the file's audio as float32 16 kHz mono chunks (about 30 s each); blocking. Past `max_s`
    seconds of decoded audio, raises `longer_than_declared(max_s)`."""
    limit = None if max_s is None else int(max_s * SAMPLE_RATE)
    decoded = 0
    for chunk in _stream(path):
        decoded += len(chunk)
        if limit is not None and decoded > limit:
            raise longer_than_declared(max_s or 0)
        yield chunk


def _stream(path: Path) -> Iterator[np.ndarray]:
    # faster-whisper's decode_audio ends with a full gc.collect() against resampler reference
    # cycles; PyAV no longer makes any (a test holds it to that), and in the daemon's large heap
    # that collection cost 45-110 ms of held GIL per file
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        fifo = av.audio.fifo.AudioFifo()
        for frame in _ignore_invalid(container.decode(audio=0)):
            frame.pts = None
            fifo.write(frame)
            if fifo.samples >= _GROUP:
                yield from _resample(resampler, fifo.read())
        if fifo.samples > 0:
            yield from _resample(resampler, fifo.read())
        yield from _resample(resampler, None)


def _resample(resampler: av.audio.resampler.AudioResampler, frame: av.AudioFrame | None) -> Iterator[np.ndarray]:
    for out in resampler.resample(frame):
        yield out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0


def decode(path: Path, max_s: float | None = None) -> np.ndarray:
    """The whole file as one float32 array (what faster-whisper's decode_audio returns); `stream`'s bound."""
    parts = list(stream(path, max_s))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
