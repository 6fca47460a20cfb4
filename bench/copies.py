"""Where a lone request loses time against the library, in-process (issue 17): one copy at a time.

`python -m bench.copies [--model base] [--rounds 7]` loads, in this one process, the library's copy
(`cpu_threads` = every core, one worker), the same with the daemon's sliced features, an `every-core`
copy (2 workers × every core), and the daemon's `replicas` (`load_model`), then times,
rounds alternating (first side rotating), the same call on each: `transcribe(path, beam_size=5)`
consumed to the end (the file decoded inside, language as faster-whisper's default), plus the
daemon's own `transcriber.transcribe` on `replicas`. Prints medians and ratios to the library.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import clips, stack


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    from faster_whisper import WhisperModel

    from asr_daemon import jobs
    from asr_daemon.engine import features, transcriber
    from asr_daemon.engine.replicas import load_model

    ap = argparse.ArgumentParser(prog="python -m bench.copies", description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--clip", type=Path, default=None)
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    md = stack.models_dir() / a.model
    clip = a.clip or clips.short().path

    def load(threads: int, workers: int) -> Any:
        return WhisperModel(str(md), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=workers)

    lib = load(cores, 1)
    sliced = load(cores, 1)
    features.install(sliced)
    every = load(cores, 2)
    rep = load_model(md, "cpu", "int8", max(1, cores // 2), 2, solo_threads=cores)

    def plain(m: Any) -> Callable[[], None]:
        return lambda: list(m.transcribe(str(clip), beam_size=5)[0]) and None

    sides: dict[str, Callable[[], None]] = {
        "library": plain(lib),
        "library + sliced features": plain(sliced),
        "every-core copy (2 workers)": plain(every),
        "replicas' solo copy": plain(rep.solo),
        "replicas via transcriber.transcribe": lambda: transcriber.transcribe(rep, clip, jobs.Options()) and None,
    }
    for fn in sides.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(a.rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            sides[k]()
            times[k].append(time.perf_counter() - t0)
    ref = statistics.median(times["library"])
    print(f"{a.model}, {clip.name}, {cores} cores, {a.rounds} rounds, load {os.getloadavg()}")
    for k, v in times.items():
        med = statistics.median(v)
        print(f"| {k} | {med:.3f} ({min(v):.3f}–{max(v):.3f}) s | {med / ref:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
