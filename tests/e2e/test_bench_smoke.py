"""The benchmark harness in smoke mode, so `make bench` cannot rot between real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import coldstart

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.timeout(120)
def test_bench_smoke_writes_report_and_raw_json(tmp_path: Path, models_dir: Path) -> None:
    """`python -m bench --smoke` measures every quick section for real and renders each of them."""
    out = tmp_path / "benchmarks.md"
    subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=110,
    )
    raw = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    over = raw["sections"]["overhead"]["clips"][0]
    assert over["same_text"] and over["ratio"]["median"] > 0
    assert raw["sections"]["throughput"]["levels"]["2"]["audio_per_wall"]["median"] > 0
    text = out.read_text()
    for title in ("1. Overhead", "2. Cold start", "3. Throughput", "6. GPU"):
        assert title in text
    if coldstart.available() is None:
        phases = raw["sections"]["coldstart"]["phases"]
        assert phases["model_load"]["median"] > 0 and phases["total"]["median"] > phases["model_load"]["median"]
