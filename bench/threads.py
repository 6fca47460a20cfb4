"""Thread policies at the library level: a lone transcription and two started together, per policy.

`python -m bench.threads [--model base] [--clip PATH] [--rounds 5]` loads the model as the library
with every core (`w1t2`), as `split` (workers × 1 thread), `every-core` (workers × every core) and
`replicas` (`asr_daemon.engine.Replicas`), then times, per round and policy, one transcription
alone and two started together. Prints medians and the ratios of docs/benchmarks.md, section 10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import clips, stack


def _timed(fn: Callable[[], Any], at_once: int) -> float:
    threads = [threading.Thread(target=fn) for _ in range(at_once)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    from faster_whisper import WhisperModel, decode_audio

    from asr_daemon.engine.replicas import load_model

    ap = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--clip", type=Path, default=None, help="audio file (default: jfk.flac from ../shared/audio)")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    path = stack.models_dir() / a.model
    samples = decode_audio(str(a.clip or clips.short().path))
    copies = {
        "library": WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cores),
        "split": WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1, num_workers=2),
        "every-core": WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cores, num_workers=2),
        "replicas": load_model(path, "cpu", "int8", 1, 2, solo_threads=cores),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in copies}
    for model in copies.values():  # warm-up
        list(model.transcribe(samples, beam_size=5, language="en")[0])
    for _ in range(a.rounds):
        for name, model in copies.items():

            def run(m: Any = model) -> None:
                list(m.transcribe(samples, beam_size=5, language="en")[0])

            lone = _timed(run, 1)
            pair = _timed(lambda: (run(), run()), 1) if name == "library" else _timed(run, 2)
            results[name].append((lone, pair))
    base_lone = statistics.median(x for x, _ in results["library"])
    base_pair = statistics.median(y for _, y in results["library"])
    print(f"{a.model}, {cores} cores, {a.rounds} rounds")
    print("| policy | lone | pair | lone ÷ library | pair throughput × library sequential |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        lone = statistics.median(x for x, _ in rows)
        pair = statistics.median(y for _, y in rows)
        print(f"| {name} | {lone:.2f} s | {pair:.2f} s | {lone / base_lone:.2f} | {base_pair / pair:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
