"""The offline engine: Silero VAD → sliding-window d-vectors (resemblyzer's encoder, numpy) → clustering.

The file streams through in blocks of `BLOCK_S` seconds (a speech region still open at a block's end
is carried into the next), so memory holds one block of audio plus one 256-float embedding per window
(1 KB per `STEP_S` of speech: 15 MB for two hours); clustering is bounded in `cluster.py`. Each speech
frame takes the speaker of the nearest window centre in its region, so speaker changes inside a region
are placed to within half a step; regions end at every pause of 100 ms or more, where speakers mostly change.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from asr_daemon.diarization import cluster, encoder, fetch, weights
from asr_daemon.diarization.engine import Params, Progress, Result, Stopped, Turn, Unavailable
from asr_daemon.engine import audio

SR = encoder.SAMPLE_RATE
BLOCK_S = 60.0
#: seconds between two windows' starts (each window is 1.6 s)
STEP_S = 0.8
WINDOW_S = encoder.PARTIAL_FRAMES * encoder.HOP / SR
#: speech regions shorter than this are left unlabelled (too short for a voice embedding)
MIN_REGION_S = 0.4
#: regions are scaled up to this loudness (dBFS) before the encoder, as resemblyzer's preprocessing does
TARGET_DBFS = -30.0
BATCH = 64
#: Silero's options. Speech is cut at every pause of 100 ms or more (inter-pausal units): speakers mostly
#: change at such a pause, and a change at a region's edge is placed to Silero's 32-ms frame instead of
#: half a window step (docs/benchmarks.md: 300 ms, which merged quick exchanges into one region, gave
#: 11.3 % DER on pyannote's sample against 8.8 %, and 23.9 % against 22.4 % on average over all clips)
_VAD = {"threshold": 0.5, "min_silence_duration_ms": 100, "speech_pad_ms": 100, "min_speech_duration_ms": 250}


@dataclass
class _Windows:
    """What the blocks yield: each window's centre, region and embedding, and the regions."""

    centres: list[float] = field(default_factory=list)
    region: list[int] = field(default_factory=list)
    embeds: list[np.ndarray] = field(default_factory=list)
    regions: list[tuple[float, float]] = field(default_factory=list)


def speech_regions(wav: np.ndarray) -> list[tuple[int, int]]:
    """Silero VAD's speech regions (sample offsets) in 16 kHz audio."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if len(wav) < 512:
        return []
    return [(int(r["start"]), int(r["end"])) for r in get_speech_timestamps(wav, VadOptions(**_VAD))]


def _blocks(path: Path, max_s: float | None = None) -> Iterator[tuple[float, np.ndarray, bool]]:
    """(offset in seconds, audio, is_last) in blocks of about BLOCK_S seconds; `audio.stream`'s bound."""
    buf: list[np.ndarray] = []
    have, offset = 0, 0.0
    for chunk in audio.stream(path, max_s):
        buf.append(chunk)
        have += len(chunk)
        if have >= BLOCK_S * SR:
            block = np.concatenate(buf)
            yield offset, block, False
            offset += len(block) / SR
            buf, have = [], 0
    block = np.concatenate(buf) if buf else np.zeros(0, dtype=np.float32)
    yield offset, block, True


def _window_starts(start: int, end: int, n_frames: int) -> list[int]:
    """Mel-frame starts of the windows covering the region [start, end) (in frames)."""
    width = encoder.PARTIAL_FRAMES
    step = round(STEP_S * SR / encoder.HOP)
    if end - start <= width:
        centre = (start + end) // 2
        first = min(max(0, centre - width // 2), max(0, n_frames - width))
        return [first]
    starts = list(range(start, end - width + 1, step))
    if end - width - starts[-1] > step // 2:
        starts.append(end - width)
    return starts


class OfflineEngine:
    """resemblyzer's voice encoder in numpy, with Silero VAD and agglomerative clustering."""

    name = "resemblyzer"

    def __init__(self, models_dir: Path, threshold: float = cluster.DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        if not fetch.installed(models_dir) and fetch.package_checkpoint() is not None:
            fetch.install(models_dir, download=False)  # the `models` group's resemblyzer wheel: no network
        try:
            self.net: encoder.VoiceEncoder | None = encoder.VoiceEncoder(weights.load(fetch.encoder_dir(models_dir)))
        except FileNotFoundError:
            raise Unavailable("diarization weights not installed: run `asrctl models pull diarization`") from None

    def _net(self) -> encoder.VoiceEncoder:
        if self.net is None:
            raise RuntimeError("the engine was unloaded")
        return self.net

    def memory_bytes(self) -> int:
        """Weights, plus one block of audio and its spectrogram and one batch of LSTM activations."""
        block = int(BLOCK_S * 2 * SR * 4 * 3)
        lstm = BATCH * encoder.PARTIAL_FRAMES * 4 * encoder.EMBED_DIM * 4 * 2
        return (self.net.nbytes if self.net else 0) + block + lstm

    def unload(self) -> None:
        """Drop the weights, and faster-whisper's cached Silero VAD session (a user still holding it keeps it;
        the next caller loads it again)."""
        self.net = None
        if "faster_whisper.vad" in sys.modules:
            sys.modules["faster_whisper.vad"].get_vad_model.cache_clear()

    def embed(self, wav: np.ndarray) -> np.ndarray | None:
        """resemblyzer's utterance embedding of the speech in `wav`; None when VAD finds less than
        `MIN_REGION_S` of it (silence, noise or hum would still make a vector, matching no one)."""
        regions = speech_regions(wav)
        speech = np.concatenate([wav[s:e] for s, e in regions]) if regions else wav[:0]
        if len(speech) < int(MIN_REGION_S * SR):
            return None
        with threadpool_limits(limits=1, user_api="blas"):
            return self._net().embed_utterance(_loud(speech))

    def _embed_block(
        self, net: encoder.VoiceEncoder, offset: float, block: np.ndarray, regions: list[tuple[int, int]], out: _Windows
    ) -> None:
        mel = encoder.mel_frames(_loud(block, regions))
        mel = np.pad(mel, ((0, max(0, encoder.PARTIAL_FRAMES - len(mel))), (0, 0)))
        pending: list[np.ndarray] = []
        for s, e in regions:
            if (e - s) < MIN_REGION_S * SR:
                continue
            out.regions.append((offset + s / SR, offset + e / SR))
            for f in _window_starts(s // encoder.HOP, e // encoder.HOP, len(mel)):
                centre = (f + encoder.PARTIAL_FRAMES / 2) * encoder.HOP / SR
                lo, hi = out.regions[-1]
                out.centres.append(min(max(offset + centre, lo), hi))
                out.region.append(len(out.regions) - 1)
                pending.append(mel[f : f + encoder.PARTIAL_FRAMES])
        for i in range(0, len(pending), BATCH):
            out.embeds.extend(net.embed(np.stack(pending[i : i + BATCH])))

    def run(self, path: Path, params: Params, on_progress: Progress, should_stop: Callable[[], bool]) -> Result:
        """Diarize the file at `path`; turns in time order."""
        # OpenBLAS's threads on these small matrix products cost far more than they save (10x slower on
        # two busy cores, docs/benchmarks.md): one thread, for the length of the run
        with threadpool_limits(limits=1, user_api="blas"):
            return self._run(path, params, on_progress, should_stop)

    def _run(self, path: Path, params: Params, on_progress: Progress, should_stop: Callable[[], bool]) -> Result:
        net = self._net()  # held for the run: an unload meanwhile does not pull it from under it
        out = _Windows()
        carry = np.zeros(0, dtype=np.float32)
        carry_at = 0.0
        for offset, block, last in _blocks(path, params.max_seconds):
            if should_stop():
                raise Stopped
            start = offset - len(carry) / SR if len(carry) else offset
            wav = np.concatenate([carry, block]) if len(carry) else block
            regions = speech_regions(wav)
            carry = np.zeros(0, dtype=np.float32)
            if not last and regions and regions[-1][1] >= len(wav) - SR // 10:
                # the last region may go on in the next block: keep it (at most 30 s of it) for then
                cut = max(regions[-1][0], len(wav) - 30 * SR)
                carry, regions = wav[cut:].copy(), regions[:-1]
                carry_at = start + cut / SR
            self._embed_block(net, start, wav, regions, out)
            on_progress(carry_at if len(carry) else start + len(wav) / SR)
        if should_stop():
            raise Stopped
        x = np.stack(out.embeds) if out.embeds else np.zeros((0, encoder.EMBED_DIM), dtype=np.float32)
        labels = cluster.cluster(
            x,
            num_speakers=params.num_speakers,
            min_speakers=params.min_speakers,
            max_speakers=params.max_speakers,
            threshold=self.threshold,
        )
        turns = _turns(out, labels)
        order: dict[int, int] = {}
        for t in turns:
            order.setdefault(t.speaker, len(order))
        cents = {order[k]: _unit(x[labels == k].mean(axis=0)) for k in order}
        return Result(turns=[Turn(t.start, t.end, order[t.speaker]) for t in turns], centroids=cents)


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / max(float(np.linalg.norm(v)), 1e-9), dtype=np.float32)


def _loud(wav: np.ndarray, regions: list[tuple[int, int]] | None = None) -> np.ndarray:
    """`wav` scaled up (never down) so its speech reaches TARGET_DBFS."""
    speech = np.concatenate([wav[s:e] for s, e in regions]) if regions else wav
    if not len(speech):
        return wav
    rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64))))
    if rms <= 1e-6:
        return wav
    gain = 10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20)
    return wav * np.float32(gain) if gain > 1 else wav


def _turns(w: _Windows, labels: np.ndarray) -> list[Turn]:
    """Split each region where the nearest window's speaker changes; merge touching turns of one speaker."""
    turns: list[Turn] = []
    by_region: dict[int, list[tuple[float, int]]] = {}
    for c, r, lab in zip(w.centres, w.region, labels.tolist(), strict=True):
        by_region.setdefault(r, []).append((c, int(lab)))
    for r, (lo, hi) in enumerate(w.regions):
        points = sorted(by_region.get(r, []))
        if not points:
            continue
        # a speaker holding a single window between two windows of another is noise: smooth it
        labs = [p[1] for p in points]
        for i in range(1, len(labs) - 1):
            if labs[i - 1] == labs[i + 1] != labs[i]:
                labs[i] = labs[i - 1]
        start = lo
        for i in range(len(points)):
            if i + 1 < len(points) and labs[i + 1] == labs[i]:
                continue
            end = hi if i + 1 == len(points) else (points[i][0] + points[i + 1][0]) / 2
            turns.append(Turn(round(start, 3), round(end, 3), labs[i]))
            start = end
    merged: list[Turn] = []
    for t in turns:
        if merged and merged[-1].speaker == t.speaker and t.start - merged[-1].end < 0.5:
            merged[-1] = Turn(merged[-1].start, t.end, t.speaker)
        else:
            merged.append(t)
    return merged
