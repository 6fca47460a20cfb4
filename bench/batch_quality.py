"""Batched against sequential transcription on real speech: word error rate and time.

`python -m bench.batch_quality [--passes 1,3] [--models base,tiny.en] [--modes seq,b4,b8] [--rounds 1]`

Builds the long real-speech clips of `bench/realspeech.py` (every recording with known words, `passes`
times), then runs the daemon's own `transcriber.transcribe` on each, every (model, mode) in a fresh
process, the modes alternating within each round: `seq` is the sequential path (what the daemon ran
before batching was its default), `bN` the batched path with batch size N (`ASR_BATCH_SIZE=N`), `libN`
faster-whisper's `BatchedInferencePipeline` called directly on the whole file. Options are the
daemon's defaults (beam 5, language detected, no word timestamps). Prints a Markdown table (WER,
median time, × realtime, sequential time ÷ this
mode's within each round, first segment) and writes the transcripts to bench/results/batch-quality-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import realspeech
from bench.clips import ROOT, duration


def child(model_dir: str, clip: str, mode: str, threads: int, window: float) -> dict[str, Any]:
    """In a fresh process: load the model, transcribe `clip` one way, return figures and text."""
    from asr_daemon import jobs
    from asr_daemon.engine import replicas, transcriber

    model = replicas.load_model(Path(model_dir), "cpu", "int8", threads, 1)
    texts: list[str] = []
    first: list[float] = []
    t0 = time.perf_counter()
    if mode.startswith("lib"):
        from faster_whisper import BatchedInferencePipeline, decode_audio

        samples = decode_audio(clip)
        t0 = time.perf_counter()
        segments, _ = BatchedInferencePipeline(model).transcribe(samples, batch_size=int(mode[3:]), beam_size=5)
        for seg in segments:
            first = first or [time.perf_counter() - t0]
            texts.append(seg.text)
    else:
        batch = int(mode[1:]) if mode.startswith("b") else 0

        def on_segment(seg: transcriber.Segment) -> None:
            first.append(time.perf_counter() - t0) if not first else None
            texts.append(seg.text)

        transcriber.transcribe(
            model, Path(clip), jobs.Options(), batch_size=batch, window_s=window, on_segment=on_segment
        )
    return {"took": time.perf_counter() - t0, "first": first[0] if first else None, "text": "".join(texts)}


def _speedup(base: list[dict[str, Any]] | None, got: list[dict[str, Any]]) -> float | None:
    """Median over the rounds of the sequential run's time ÷ this mode's."""
    if not base:
        return None
    return float(statistics.median(b["took"] / g["took"] for b, g in zip(base, got, strict=True)))


def main() -> None:
    """Build the clips, run every configuration, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", default="1,3", help="clip lengths, in passes over the recordings")
    ap.add_argument("--models", default="base,tiny.en")
    ap.add_argument("--modes", default="seq,b8")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--lengths", default="", help="instead of whole passes: the first L seconds of the clip, e.g. 30,60,120"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--models-dir", default=str(ROOT / "var" / "test-cache" / "models"))
    ap.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "CLIP", "MODE"))
    args = ap.parse_args()
    if args.child:
        model_dir, clip, mode = args.child
        print(json.dumps(child(model_dir, clip, mode, args.threads, args.window)))
        return
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[int, float]] = [(int(p), 0.0) for p in args.passes.split(",")]
        if args.lengths:
            # a pass is about 127 s: lengths beyond 3 passes cut a clip of as many passes as they need
            cases = [(max(3, math.ceil(float(x) / 120)), float(x)) for x in args.lengths.split(",")]
        for passes, length in cases:
            clip = Path(tmp) / f"real-{passes}.wav"
            ref = realspeech.long_clip(passes, clip)
            if length:  # timing only: the reference no longer matches the cut
                cut = Path(tmp) / f"real-{passes}-{length:.0f}.wav"
                subprocess.run(["sox", str(clip), str(cut), "trim", "0", str(length)], check=True)
                clip = cut
            seconds = duration(clip)
            for name in args.models.split(","):
                runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes.split(",")}
                for r in range(args.rounds):
                    modes = list(runs)
                    for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:  # alternate who goes first
                        cmd = [sys.executable, "-m", "bench.batch_quality", "--threads", str(args.threads)]
                        cmd += ["--window", str(args.window), "--child", str(Path(args.models_dir) / name)]
                        cmd += [str(clip), mode]
                        res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                        runs[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
                base = runs.get("seq")
                for mode, got in runs.items():
                    took = statistics.median(g["took"] for g in got)
                    rows.append(
                        {
                            "clip_s": seconds,
                            "passes": passes,
                            "model": name,
                            "mode": mode,
                            "took": took,
                            "xrt": seconds / took,
                            "first": statistics.median(g["first"] or 0 for g in got),
                            "wer": None if length else realspeech.wer(ref, got[0]["text"]),
                            "seq_over_this": _speedup(base, got),
                            "words": len(realspeech.normalize(ref)),
                            "texts": [g["text"] for g in got],
                            "ref": ref,
                        }
                    )
                    r0 = rows[-1]
                    wer = "—" if r0["wer"] is None else f"{100 * r0['wer']:.1f} %"
                    speedup = "—" if r0["seq_over_this"] is None else f"{r0['seq_over_this']:.2f}"
                    print(
                        f"| {seconds:.0f} s | {name} | {mode} | {wer} | {took:.1f} s | {r0['xrt']:.1f} | "
                        f"{speedup} | {r0['first']:.1f} s |",
                        flush=True,
                    )
    out["rows"] = rows
    out["load_after"] = os.getloadavg()
    dest = ROOT / "bench" / "results" / f"batch-quality-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    print(f"\nload {out['load']} → {out['load_after']}; transcripts in {dest}")


if __name__ == "__main__":
    main()
