"""faster-whisper called directly, in this process: the ceiling a request to the daemon is compared to.

Same model directory, device, compute type and decoding options as the daemon (beam 5, no VAD,
no word timestamps), `cpu_threads` = all cores, which is what a user calling the library gets.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Direct:
    """A WhisperModel loaded once; `run` transcribes a file to the end and times it."""

    model: Any
    load_s: float
    threads: int

    def run(self, path: Path, beam_size: int = 5) -> tuple[float, str]:
        """(seconds, text) for transcribing `path` completely."""
        t0 = time.perf_counter()
        segments, _ = self.model.transcribe(str(path), beam_size=beam_size)
        text = "".join(s.text for s in segments).strip()
        return time.perf_counter() - t0, text


def load(model_dir: Path, threads: int = 0, compute_type: str = "int8", device: str = "cpu") -> Direct:
    """Load the model as a user would (`cpu_threads` defaults to every core)."""
    from faster_whisper import WhisperModel

    threads = threads or (os.cpu_count() or 1)
    t0 = time.perf_counter()
    model = WhisperModel(
        str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads, local_files_only=True
    )
    return Direct(model=model, load_s=time.perf_counter() - t0, threads=threads)


def run_in_subprocess(model_dir: Path, path: Path, beam_size: int = 5) -> dict[str, float]:
    """Load and transcribe in a fresh process: {load_s, transcribe_s, peak_rss, rss_loaded} (library alone)."""
    import json
    import subprocess
    import sys

    code = (
        "import json,sys,time,os\n"
        "from bench import direct, stack\n"
        "d = direct.load(__import__('pathlib').Path(sys.argv[1]))\n"
        "loaded = stack.rss(os.getpid())\n"
        "dt, _ = d.run(__import__('pathlib').Path(sys.argv[2]), int(sys.argv[3]))\n"
        "print(json.dumps({'load_s': d.load_s, 'transcribe_s': dt, 'rss_loaded': loaded,"
        " 'rss_after': stack.rss(os.getpid()), 'peak_rss': stack.peak_rss(os.getpid())}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(path), str(beam_size)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
