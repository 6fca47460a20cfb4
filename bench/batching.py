"""Section `batched` (issue 17): a long real-speech file, the daemon against faster-whisper called directly.

The clip is `realspeech.long_clip` (every real recording with known words, three passes: about 6
minutes). Each round runs, first side rotating:
- `daemon`: POST to a daemon with its defaults (batched: `ASR_BATCH_SIZE` from `ASR_BATCH_MIN_SECONDS`);
- `direct`: the daemon's batched algorithm called in-process with the same options
  (`transcriber.transcribe(..., batch_size=8)`, a model with every core): what the daemon adds;
- `library`: faster-whisper's `BatchedInferencePipeline` as it comes (VAD, text without timestamps,
  batch 8, beam 5): what speaches and the library's README measure;
- `library_ts`: the same pipeline with `without_timestamps=False`, the option the daemon decodes with
  (its segments keep sentence times): the library "with the same options";
- `plain`: `WhisperModel.transcribe` (sequential, beam 5): the daemon before batching was its default.
Figures: medians of the rounds' wall times, ratios within each round, WER of each side's first run.
speaches publishes 1.05 × the library's batched time on 60 s (quoted, not measured: not installable here).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench import clips, direct, realspeech, stack, stats

SIDES = ("daemon", "direct", "library", "library_ts", "plain")
BATCH = 8


def section(
    a: argparse.Namespace, svc: stack.Services, work: Path, short: clips.Clip, env: dict[str, str]
) -> dict[str, Any]:
    """Run the rounds; the raw figures for `render`."""
    from asr_daemon import jobs
    from asr_daemon.engine import transcriber

    work.mkdir(parents=True, exist_ok=True)
    clip = work / "real-speech.wav"
    ref = realspeech.long_clip(1 if a.smoke else 3, clip)
    if a.smoke:  # the same code paths on the first 35 s (the daemon told to batch it), WER not meaningful
        whole = clip.with_name("whole.wav")
        clip.rename(whole)
        subprocess.run(["sox", str(whole), str(clip), "trim", "0", "35"], check=True)
        env = {**env, "ASR_BATCH_MIN_SECONDS": "0"}
    seconds = clips.duration(clip)
    lib = direct.load(stack.models_dir() / a.model)
    data = clip.read_bytes()

    def side(name: str, c: httpx.Client) -> tuple[float, str]:
        t0 = time.perf_counter()
        if name == "daemon":
            _, _, text = stack.post_transcription(c, clip.name, data)
        elif name == "direct":
            texts: list[str] = []
            transcriber.transcribe(
                lib.model,
                clip,
                jobs.Options(),
                batch_size=BATCH,
                window_s=300.0,
                on_segment=lambda s: texts.append(s.text),
            )
            text = "".join(texts)
        elif name in ("library", "library_ts"):
            from faster_whisper import BatchedInferencePipeline

            segs, _ = BatchedInferencePipeline(lib.model).transcribe(
                str(clip), batch_size=BATCH, beam_size=5, without_timestamps=name == "library"
            )
            text = "".join(s.text for s in segs)
        else:
            segs, _ = lib.model.transcribe(str(clip), beam_size=5)
            text = "".join(s.text for s in segs)
        return time.perf_counter() - t0, text

    d = stack.make_daemon(svc, work / "daemon", **{"ASR_MODEL": a.model, **env})
    rounds: list[dict[str, float]] = []
    wer: dict[str, float] = {}
    try:
        d.start()
        with httpx.Client(base_url=d.url, timeout=3600) as c:
            stack.post_transcription(c, short.name, short.path.read_bytes())  # load the model
            for i in range(1 if a.smoke else a.runs):
                order = SIDES[i % len(SIDES) :] + SIDES[: i % len(SIDES)]
                r: dict[str, float] = {}
                for name in order:
                    r[name], text = side(name, c)
                    wer.setdefault(name, realspeech.wer(ref, text))
                rounds.append(r)
    finally:
        d.stop()
    return {
        "model": a.model,
        "clip_s": seconds,
        "words": len(realspeech.normalize(ref)),
        "rounds": rounds,
        "wer": wer,
        "times": {k: stats.summary([r[k] for r in rounds]) for k in SIDES},
        "ratios": {
            "daemon / direct": stats.summary([r["daemon"] / r["direct"] for r in rounds]),
            "daemon / library": stats.summary([r["daemon"] / r["library"] for r in rounds]),
            "daemon / library with timestamps": stats.summary([r["daemon"] / r["library_ts"] for r in rounds]),
            "plain / daemon": stats.summary([r["plain"] / r["daemon"] for r in rounds]),
        },
    }


def render(s: dict[str, Any]) -> list[str]:
    """The section's Markdown lines."""
    labels = {
        "daemon": "daemon over HTTP (defaults: batched 8)",
        "direct": "the daemon's batched transcriber in-process (`direct`)",
        "library": "`BatchedInferencePipeline` as it comes (batch 8, VAD, no timestamps)",
        "library_ts": "`BatchedInferencePipeline` with timestamps (`without_timestamps=False`, as the daemon)",
        "plain": "`WhisperModel.transcribe` (sequential)",
    }
    head = (
        f"{s['clip_s']:.0f} s of real speech (`bench/realspeech.py`: {s['words']} words), model {s['model']} "
        f"int8, beam 5, {len(s['rounds'])} alternating rounds; the library sides with `cpu_threads` = every core."
    )
    out = [
        head,
        "",
        "| side | wall time, median (min–max) | × realtime | WER |",
        "|---|---|---|---|",
    ]
    for k, label in labels.items():
        if k not in s["times"]:  # a result from before the side existed
            continue
        t = s["times"][k]
        out.append(
            f"| {label} | {t['median']:.1f} ({t['min']:.1f}–{t['max']:.1f}) s | {s['clip_s'] / t['median']:.1f} | "
            f"{100 * s['wer'][k]:.1f} % |"
        )
    out += ["", "| ratio (within each round) | median (min–max) |", "|---|---|"]
    for k, v in s["ratios"].items():
        out.append(f"| {k} | {v['median']:.3f} ({v['min']:.3f}–{v['max']:.3f}) |")
    med = statistics.median(r["daemon"] / r["library"] for r in s["rounds"])
    out += ["", f"speaches (published): 1.05 × the library's batched time on 60 s; the daemon here: {med:.2f} ×."]
    if all("library_ts" in r for r in s["rounds"]):
        ts = statistics.median(r["daemon"] / r["library_ts"] for r in s["rounds"])
        out.append(f"Against the library with the daemon's options (timestamps on): {ts:.2f} × (goal ≤ 1.02).")
    return out
