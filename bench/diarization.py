"""Diarization: DER (pyannote.metrics, collar 0.25 s, overlap counted), speaker count, × realtime,
and the cost relative to transcribing the same file with `base` on the CPU.

python -m bench --sections diarization      # or alone: python -m bench.diarization
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bench import clips, stack

ROOT = Path(__file__).resolve().parent.parent


def read_rttm(path: Path) -> list[tuple[float, float, str]]:
    """(start, end, speaker) of each SPEAKER line of an RTTM file."""
    out = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            out.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return out


def der(reference: list[tuple[float, float, str]], hypothesis: list[tuple[float, float, str]]) -> dict[str, float]:
    """DER and its parts with pyannote.metrics (collar 0.25 s, overlapping speech scored)."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: list[tuple[float, float, str]]) -> Annotation:
        a = Annotation()
        for i, (s, e, spk) in enumerate(turns):
            a[Segment(s, e), i] = spk
        return a

    metric = DiarizationErrorRate(collar=0.25, skip_overlap=False)
    with warnings.catch_warnings():  # "uem approximated by the union of both extents": what is wanted here
        warnings.simplefilter("ignore", UserWarning)
        parts = metric(annotation(reference), annotation(hypothesis), detailed=True)
    total = parts["total"] or 1.0
    return {
        "der": round(parts["diarization error rate"], 4),
        "missed": round(parts["missed detection"] / total, 4),
        "false_alarm": round(parts["false alarm"] / total, 4),
        "confusion": round(parts["confusion"] / total, 4),
    }


def two_voices(cache: Path) -> tuple[Path, list[tuple[float, float, str]]]:
    """A 2-speaker espeak-ng dialogue (en-us male, en+f3 higher and faster) and its reference turns."""
    from bench import dialogue

    return dialogue.dialogue(cache)


def diarize(path: Path, models_dir: Path, **params: int) -> tuple[list[tuple[float, float, str]], float]:
    """Turns from the offline engine and the seconds it took (weights already loaded)."""
    from asr_daemon.diarization import engine, offline

    eng = offline.OfflineEngine(models_dir)
    t0 = time.perf_counter()
    res = eng.run(path, engine.Params(**params), lambda _s: None, lambda: False)
    took = time.perf_counter() - t0
    return [(t.start, t.end, engine.speaker_label(t.speaker)) for t in res.turns], took


def transcribe_s(path: Path, model_dir: Path) -> float:
    """Seconds faster-whisper takes to transcribe `path` (int8, beam 5, the daemon's defaults)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    t0 = time.perf_counter()
    segments, _ = model.transcribe(str(path), beam_size=5)
    for _ in segments:
        pass
    return time.perf_counter() - t0


def section(models_dir: Path | None = None, runs: int = 3, base: bool = True, smoke: bool = False) -> dict[str, Any]:
    """DER, speaker count and speed on every clip with a reference; base's transcription time for cost.

    `smoke`: the espeak dialogue only, one run, no second run with the count given, no transcription."""
    from asr_daemon.diarization import fetch

    models_dir = models_dir or stack.models_dir()
    fetch.install(models_dir)
    cases: list[tuple[str, Path, list[tuple[float, float, str]]]] = []
    sample = clips.SHARED / "pyannote_sample.wav"
    if sample.is_file() and not smoke:
        cases.append(("pyannote_sample.wav", sample, read_rttm(sample.with_suffix(".rttm"))))
    cache = ROOT / "var" / "bench-cache" / "audio"
    cache.mkdir(parents=True, exist_ok=True)
    dialogue, ref = two_voices(cache)
    cases.append(("espeak two voices", dialogue, ref))
    out: dict[str, Any] = {"clips": [], "load_before": [round(x, 2) for x in os.getloadavg()]}
    for name, path, reference in cases:
        seconds = clips.duration(path)
        hyp, took = diarize(path, models_dir)
        times = [took] + [diarize(path, models_dir)[1] for _ in range(runs - 1)]
        fixed = hyp if smoke else diarize(path, models_dir, num_speakers=len({r[2] for r in reference}))[0]
        row: dict[str, Any] = {
            "clip": name,
            "seconds": round(seconds, 2),
            "speakers_ref": len({r[2] for r in reference}),
            "speakers_found": len({h[2] for h in hyp}),
            **der(reference, hyp),
            "der_known_count": der(reference, fixed)["der"],
            "diarize_s": round(sorted(times)[len(times) // 2], 3),
        }
        row["x_realtime"] = round(seconds / row["diarize_s"], 1)
        base_dir = models_dir / "base"
        if base and not smoke and base_dir.is_dir():
            tr = sorted(transcribe_s(path, base_dir) for _ in range(runs))[runs // 2]
            row["base_transcribe_s"] = round(tr, 3)
            row["cost_vs_base"] = round(row["diarize_s"] / tr, 3)
        out["clips"].append(row)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> int:
    """Print the section's result."""
    import json

    print(json.dumps(section(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
