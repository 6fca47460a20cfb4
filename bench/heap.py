"""glibc's malloc thresholds against the memory an unloaded model leaves behind, and against speed.

An unloaded model leaves 30-60 MB of RSS behind (up to ~80 MB in a process with many threads): the
top chunks of the per-thread arenas CTranslate2's threads computed in, which `malloc_trim` does not
shrink (only the main arena's top). glibc's fixed thresholds return them, at a price in speed
(docs/benchmarks.md, "7. Investigated, not changed"); the daemon keeps glibc's defaults.

`python -m bench.heap [--model base] [--rounds 5] [--cycles 4]` runs, rounds alternating (first side
rotating), one fresh process per side and round, the library's own `WhisperModel`: "default"
(glibc's sliding thresholds); "mapped" (each allocation ≥ 64 KiB mapped on its own while the model
loads, so the weights never sit in the heap; then mmap threshold 32 MiB, trim threshold 128 KiB);
"trim-4M" (the same, trim threshold 4 MiB); "trim-64M" (the same, trim threshold 64 MiB: the ceiling
of glibc's own sliding values). Each process loads,
transcribes the clip (`beam_size=5`, consumed to the end) three times, unloads (`del`, `gc.collect`,
`malloc_trim` as the daemon's cache does), and repeats load → one transcription → unload `--cycles`
times more. Prints medians over rounds: the transcription time, peak RSS, RSS before the first load
and after each unload, and the spread of the after-unload RSS across cycles.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import clips, stack

#: side → (trim threshold after the load, or None for glibc's defaults throughout)
SIDES = {"default": None, "mapped": 128 << 10, "trim-4M": 4 << 20, "trim-64M": 64 << 20}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _child(side: str, model: Path, clip: Path, cycles: int) -> dict[str, Any]:
    """One side in this process: the measurements as a dict."""
    import ctypes

    from faster_whisper import WhisperModel

    from asr_daemon.engine import device

    mallopt = ctypes.CDLL("libc.so.6").mallopt
    trim = SIDES[side]

    def load() -> Any:
        if trim is not None:
            mallopt(_M_MMAP_THRESHOLD, 64 << 10)
        m = WhisperModel(str(model), device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1)
        if trim is not None:
            mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            mallopt(_M_TRIM_THRESHOLD, trim)
        return m

    def use(m: Any) -> float:
        t0 = time.perf_counter()
        segments, _ = m.transcribe(str(clip), beam_size=5)
        list(segments)
        return time.perf_counter() - t0

    def unloaded() -> int:
        gc.collect()
        device.trim_heap()
        return device.rss_bytes()

    device.trim_heap()
    start = device.rss_bytes()
    m = load()
    times = [use(m) for _ in range(3)]
    m.model.unload_model()
    m = None
    afters = [unloaded()]
    for _ in range(cycles):
        m = load()
        use(m)
        m.model.unload_model()
        m = None
        afters.append(unloaded())
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    return {"transcribe_s": statistics.median(times), "start": start, "afters": afters, "peak": peak}


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    ap = argparse.ArgumentParser(prog="python -m bench.heap", description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    md = stack.models_dir() / a.model
    clip = a.clip or clips.short().path
    if a.child:
        print(json.dumps(_child(a.child, md, clip, a.cycles)))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    for r in range(a.rounds):
        order = list(SIDES)
        for side in order[r % len(order) :] + order[: r % len(order)]:
            cmd = [sys.executable, "-m", "bench.heap", "--child", side, "--model", a.model, "--clip", str(clip)]
            out = subprocess.run([*cmd, "--cycles", str(a.cycles)], check=True, capture_output=True, text=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    mb = 1 << 20
    print(f"model {a.model}, clip {clip.name} ({clips.duration(clip):.1f} s), {a.rounds} rounds, {a.cycles} cycles")
    print("| side | transcribe | peak RSS | RSS before load | after 1st unload | after last unload | spread |")
    print("|---|---|---|---|---|---|---|")
    med: dict[str, float] = {}
    for side in SIDES:
        rs = runs[side]
        med[side] = statistics.median(x["transcribe_s"] for x in rs)

        def m(f: Any, rs: list[dict[str, Any]] = rs) -> float:
            return float(statistics.median(f(x) for x in rs)) / mb

        print(
            f"| {side} | {med[side]:.2f} s | {m(lambda x: x['peak']):.0f} MB | {m(lambda x: x['start']):.0f} MB"
            f" | {m(lambda x: x['afters'][0]):.0f} MB | {m(lambda x: x['afters'][-1]):.0f} MB"
            f" | {m(lambda x: max(x['afters']) - min(x['afters'])):.0f} MB |"
        )
    print("transcribe time / default: " + ", ".join(f"{s} {med[s] / med['default']:.3f}" for s in SIDES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
