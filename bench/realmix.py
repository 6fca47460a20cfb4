"""Multi-speaker clips made of real recordings of different people, with references from the cut points.

The shared recordings (`../shared/audio`, never copied into the project) hold one speaker each: JFK
(jfk.flac), the reader of the MIT licence (multilingual.mp3, English then German), and the speakers of
the short commands (hotwords.mp3, the Wyoming clips). Each is cut into utterances at Silero's speech
regions (regions longer than `MAX_PIECE_S` cut again at a seeded point), and the utterances are laid end
to end, speakers taking turns in a seeded order with gaps drawn from `GAPS` (0 s: a change without a
pause). The reference is each utterance's speech (the source's own speech regions, so pauses inside an
utterance are not speech), shifted to where the utterance was put. Deterministic for a seed.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 16000
#: speaker label → recording in the shared folder
SOURCES = {
    "JFK": "jfk.flac",
    "MIT": "multilingual.mp3",
    "HOT": "hotwords.mp3",
    "LAMP": "turn_on_the_living_room_lamp.wav",
    "FR": "whats_your_name_french.wav",
    "ES": "living_room_light_es.wav",
    "DE": "living_room_light_de.wav",
}
#: gaps between turns (seconds), drawn uniformly
GAPS = (0.0, 0.0, 0.15, 0.3, 0.6, 1.0)
MAX_PIECE_S = 6.0
MIN_PIECE_S = 1.0
#: the clips of the benchmark: name → (speakers, turns, seed)
MIXES = {
    "real mix: JFK + MIT reader (a)": (("JFK", "MIT"), 10, 1),
    "real mix: JFK + MIT reader (b)": (("JFK", "MIT"), 10, 2),
    "real mix: JFK + MIT reader (c)": (("JFK", "MIT"), 10, 3),
    "real mix: 3 speakers": (("JFK", "MIT", "HOT"), 9, 4),
    "real mix: 6 speakers": (("JFK", "MIT", "HOT", "LAMP", "FR", "ES"), 12, 5),
}

Turns = list[tuple[float, float, str]]


@dataclass
class _Piece:
    speaker: str
    audio: np.ndarray
    speech: list[tuple[float, float]]  # relative to the piece's start


#: Silero's options for the references, fixed here so that the engine's own choice does not move them:
#: a pause under 300 ms inside an utterance counts as speech
REF_VAD = {"threshold": 0.5, "min_silence_duration_ms": 300, "speech_pad_ms": 100, "min_speech_duration_ms": 250}


def _regions(wav: np.ndarray) -> list[tuple[int, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return [(int(r["start"]), int(r["end"])) for r in get_speech_timestamps(wav, VadOptions(**REF_VAD))]


def pieces(folder: Path, speaker: str, rng: random.Random) -> list[_Piece]:
    """The speaker's recording cut into utterances (speech regions, long ones cut again), 0.1 s margin."""
    from asr_daemon.engine import audio

    wav = audio.decode(folder / SOURCES[speaker])
    regions = _regions(wav)
    out = []
    for s, e in regions:
        cuts = [s]
        while (e - cuts[-1]) / SR > MAX_PIECE_S:
            cuts.append(cuts[-1] + int(rng.uniform(2.0, MAX_PIECE_S - MIN_PIECE_S) * SR))
        cuts.append(e)
        for a, b in itertools.pairwise(cuts):
            if (b - a) / SR < 0.3:
                continue
            lo, hi = max(0, a - SR // 10) if a == s else a, min(len(wav), b + SR // 10) if b == e else b
            speech = [(max(rs, a), min(re_, b)) for rs, re_ in regions if min(re_, b) > max(rs, a)]
            rel = [((x - lo) / SR, (y - lo) / SR) for x, y in speech]
            out.append(_Piece(speaker, wav[lo:hi], rel))
    return out


def mix(folder: Path, speakers: tuple[str, ...], turns: int, seed: int) -> tuple[np.ndarray, Turns]:
    """`turns` utterances of `speakers` in a seeded order (no one twice in a row), and the reference."""
    rng = random.Random(seed)
    pool = {spk: pieces(folder, spk, rng) for spk in speakers}
    for spk in speakers:
        rng.shuffle(pool[spk])
    used = dict.fromkeys(speakers, 0)
    parts: list[np.ndarray] = []
    ref: Turns = []
    at, last = 0.0, ""
    order = list(speakers)  # each speaker once first, then at random
    rng.shuffle(order)
    for i in range(turns):
        fresh = [s for s in speakers if s != last and used[s] < len(pool[s])]  # an utterance not heard yet
        spk = order[i] if i < len(order) else rng.choice(fresh or [s for s in speakers if s != last])
        piece = pool[spk][used[spk] % len(pool[spk])]
        used[spk] += 1
        if parts:
            gap = rng.choice(GAPS)
            parts.append(np.zeros(int(gap * SR), dtype=np.float32))
            at += gap
        ref += [(round(at + a, 3), round(at + b, 3), spk) for a, b in piece.speech]
        parts.append(piece.audio)
        at += len(piece.audio) / SR
        last = spk
    return np.concatenate(parts).astype(np.float32), ref


def write_wav(path: Path, wav: np.ndarray) -> Path:
    """16 kHz mono 16-bit WAV."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def single_reference(path: Path) -> Turns:
    """A one-speaker recording's reference: its speech regions, all speaker S."""
    from asr_daemon.engine import audio

    return [(round(s / SR, 3), round(e / SR, 3), "S") for s, e in _regions(audio.decode(path))]


def write(folder: Path, cache: Path) -> list[tuple[str, Path, Turns]]:
    """Every clip of `MIXES` as a 16 kHz WAV in `cache`, with its reference; [] without the recordings."""
    if not all((folder / f).is_file() for f in SOURCES.values()):
        return []
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for name, (speakers, turns, seed) in MIXES.items():
        wav, ref = mix(folder, speakers, turns, seed)
        path = write_wav(cache / f"realmix-{'-'.join(speakers)}-{turns}-{seed}.wav", wav)
        out.append((name, path, ref))
    return out


def stereo_reference(path: Path) -> tuple[np.ndarray, Turns]:
    """A two-channel recording with one speaker per channel, as mono, and the reference from each channel's
    own speech regions (speaker L, R); overlapping speech stays overlapped in the reference."""
    import wave

    with wave.open(str(path), "rb") as w:
        if w.getframerate() != SR or w.getnchannels() != 2 or w.getsampwidth() != 2:
            raise ValueError(f"{path.name}: expected 16 kHz 16-bit stereo")
        raw = w.readframes(w.getnframes())
    data = np.frombuffer(raw, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768
    ref: Turns = []
    for ch, label in ((0, "L"), (1, "R")):
        ref += [(round(s / SR, 3), round(e / SR, 3), label) for s, e in _regions(np.ascontiguousarray(data[:, ch]))]
    return data.mean(axis=1).astype(np.float32), sorted(ref)
