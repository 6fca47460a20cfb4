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


def real_clips(cache: Path) -> list[tuple[str, Path, list[tuple[float, float, str]]]]:
    """The other real material: mixes of different real speakers (`realmix`), stereo_diarization.wav as mono
    (its channels give the reference), and two single-speaker recordings (for the count: 1 is right)."""
    from bench import realmix

    folder = clips.SHARED
    out = realmix.write(folder, cache)
    stereo = folder / "stereo_diarization.wav"
    if stereo.is_file():
        wav, ref = realmix.stereo_reference(stereo)
        out.append(
            ("stereo_diarization.wav as mono (overlapping)", realmix.write_wav(cache / "stereo-mono.wav", wav), ref)
        )
    for name in ("jfk.flac", "multilingual.mp3"):
        if (folder / name).is_file():
            out.append((f"{name} (one speaker)", folder / name, realmix.single_reference(folder / name)))
    return out


def section(models_dir: Path | None = None, runs: int = 3, base: bool = True, smoke: bool = False) -> dict[str, Any]:
    """DER, speaker count and speed on every clip with a reference; base's transcription time for cost.

    The timed clips (pyannote's sample, the espeak dialogue) run `runs` times and beside `base`'s
    transcription; the other real clips once, for DER and the count. `smoke`: the espeak dialogue only,
    one run, no second run with the count given, no transcription."""
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
    timed = len(cases)
    if not smoke:
        cases += real_clips(cache)
    out: dict[str, Any] = {"clips": [], "load_before": [round(x, 2) for x in os.getloadavg()]}
    for i, (name, path, reference) in enumerate(cases):
        seconds = clips.duration(path)
        hyp, took = diarize(path, models_dir)
        n = runs if i < timed else 1
        times = [took] + [diarize(path, models_dir)[1] for _ in range(n - 1)]
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
        if base and not smoke and base_dir.is_dir() and i < timed:
            tr = sorted(transcribe_s(path, base_dir) for _ in range(runs))[runs // 2]
            row["base_transcribe_s"] = round(tr, 3)
            row["cost_vs_base"] = round(row["diarize_s"] / tr, 3)
        out["clips"].append(row)
    rows = out["clips"]
    out["count_right"] = sum(r["speakers_found"] == r["speakers_ref"] for r in rows)
    multi = [r["der"] for r in rows if r["speakers_ref"] > 1]
    out["mean_der_multi"] = round(sum(multi) / len(multi), 4) if multi else None
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> int:
    """Print the section's result. `--min-silence-ms 300` runs the engine as it was before pauses of 100 ms
    split its regions (for the before/after figures of docs/benchmarks.md); `--no-base` skips the
    transcription timing."""
    import argparse
    import json

    from asr_daemon.diarization import offline

    p = argparse.ArgumentParser(prog="python -m bench.diarization")
    p.add_argument("--min-silence-ms", type=int, default=None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-base", action="store_true")
    a = p.parse_args()
    if a.min_silence_ms is not None:
        offline._VAD["min_silence_duration_ms"] = a.min_silence_ms
    print(json.dumps(section(runs=a.runs, base=not a.no_base), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
