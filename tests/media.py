"""Build unusual and broken media files for the bad-input corpus: real encoders (PyAV, sox), no mocks.

Everything is written under a directory the caller owns and cached by name there.
"""

from __future__ import annotations

import io
import struct
import subprocess
import zipfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av


def transcode(
    src: Path, dst: Path, fmt: str, codec: str, rate: int, layout: str = "mono", metadata: dict[str, str] | None = None
) -> Path:
    """Re-encode the audio of `src` into `dst` with PyAV (container `fmt`, `codec`, `rate`, `layout`)."""
    if dst.exists():
        return dst
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt) as out:
        if metadata:
            out.metadata.update(metadata)
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt_name = stream.codec_context.format.name if stream.codec_context.format else None
        resampler = av.AudioResampler(format=fmt_name, layout=layout, rate=rate)
        frames = [f for f in inp.decode(audio=0)]
        for frame in [*frames, None]:
            if frame is not None:
                frame.pts = None
            for res in resampler.resample(frame):
                for packet in stream.encode(res):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def sox(src: Path, dst: Path, *effects: str) -> Path:
    """`sox src dst effects...` (cached by `dst`)."""
    if not dst.exists():
        subprocess.run(["sox", str(src), str(dst), *effects], check=True)
    return dst


def silence(dst: Path, seconds: float, rate: int = 1000) -> Path:
    """`seconds` of silence as FLAC at a low sample rate, so ten hours take ~130 kB and a few seconds."""
    if not dst.exists():
        subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", str(dst), "trim", "0", str(seconds)], check=True)
    return dst


def truncated(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    """The first `fraction` of the bytes of `src`."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def wav_bytes(pcm: bytes, *, declared: int | None = None, rate: int = 16000, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV holding `pcm`, whose header declares `declared` data bytes (default: the truth)."""
    size = len(pcm) if declared is None else declared
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + pcm
    )


def video_without_audio(dst: Path) -> Path:
    """A short MP4 holding only an MPEG-4 video track."""
    if dst.exists():
        return dst
    import numpy as np

    with av.open(str(dst), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.time_base = Fraction(1, 10)
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def _id3(frame_id: bytes, body: bytes) -> bytes:
    """An ID3v2.3 tag holding one frame (its size syncsafe-encoded in the tag header)."""
    frame = frame_id + struct.pack(">I", len(body)) + b"\x00\x00" + body
    n = len(frame)
    syncsafe = bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])
    return b"ID3\x03\x00\x00" + syncsafe + frame


def id3_tag(size: int) -> bytes:
    """An ID3v2.3 tag of about `size` bytes (one TXXX frame), to put in front of an MP3."""
    return _id3(b"TXXX", b"\x00" + b"description\x00" + b"A" * size)


def id3_picture(size: int) -> bytes:
    """An ID3v2.3 tag holding a front-cover picture (APIC frame) of about `size` bytes."""
    return _id3(b"APIC", b"\x00" + b"image/jpeg\x00" + b"\x03" + b"cover\x00" + b"\xff\xd8\xff\xe0" + b"\x00" * size)


def zip_of(src: Path) -> bytes:
    """A zip archive holding `src`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(src, src.name)
    return buf.getvalue()


def _retimed(src: Path, dst: Path, retime: Callable[[int, int, Any], None]) -> Path:
    """Re-mux Opus audio from `src` (any format) into Matroska, `retime(i, n, packet)` setting each of
    the n packets' timestamps and duration on its way."""
    if dst.exists():
        return dst
    honest = transcode(src, dst.with_suffix(".honest.mka"), "matroska", "libopus", 48000)
    with av.open(str(honest)) as inp, av.open(str(dst), "w", format="matroska") as out:
        in_stream = inp.streams.audio[0]
        stream = out.add_stream_from_template(in_stream)
        packets = [p for p in inp.demux(in_stream) if p.dts is not None]
        for i, packet in enumerate(packets):
            retime(i, len(packets), packet)
            packet.stream = stream
            out.mux(packet)
    return dst


def lying_duration(src: Path, dst: Path, factor: int = 100) -> Path:
    """Opus audio from `src` in Matroska with every packet's timestamps and duration divided by
    `factor`: the container claims 1/factor of the audio that really decodes."""

    def shrink(_: int, __: int, packet: Any) -> None:
        packet.pts = packet.pts // factor if packet.pts is not None else None
        packet.dts = packet.dts // factor
        packet.duration = max(1, (packet.duration or 0) // factor)

    return _retimed(src, dst, shrink)


def lying_middle(src: Path, dst: Path, honest: int = 8) -> Path:
    """Opus audio from `src` in Matroska whose first and last `honest` packets keep their timestamps
    (what the probe decodes to check a container's word) while every packet between them lasts 1 tick:
    the file claims a small fraction of what decodes (20 ms packets: about 1/20)."""
    frozen: list[int] = []

    def squeeze(i: int, n: int, packet: Any) -> None:
        if honest <= i < n - honest:
            if not frozen:
                frozen.append(packet.pts)
            packet.pts = packet.dts = frozen[0] + (i - honest)
            packet.duration = 1
        elif frozen:
            packet.pts = packet.dts = frozen[0] + (n - 2 * honest) + (i - (n - honest)) * 20 + 20

    return _retimed(src, dst, squeeze)
