"""The benchmark harness in smoke mode, so `make bench` cannot rot between real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import coldstart

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.timeout(420)
def test_bench_smoke_writes_report_and_raw_json(tmp_path: Path, models_dir: Path) -> None:
    """`python -m bench --smoke` measures every section for real (long audio and idle on short clips and
    windows) and renders each of them."""
    out = tmp_path / "benchmarks.md"
    subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=410,  # 60-180 s on 2 busy cores (load average 15), the load section ~20 s, policies ~40 s
    )
    raw = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    over = raw["sections"]["overhead"]["clips"][0]
    assert over["same_text"] and over["ratio"]["median"] > 0
    assert raw["sections"]["throughput"]["levels"]["2"]["audio_per_wall"]["median"] > 0
    text = out.read_text()
    for title in (
        "1. Overhead",
        "2. Cold start",
        "3. Throughput",
        "4. Long audio",
        "5. Idle",
        "6. GPU",
        "7. Load",
        "9. Speaker",
    ):
        assert title in text
    level = raw["sections"]["load"]["levels"]["3"]
    assert level["served"] == 3 and level["transport_errors"] == 0 and level["peak_fds"] > 0, level
    assert raw["sections"]["load"]["uploads"]["held_fds_per_upload"] > 0
    dialogue = raw["sections"]["diarization"]["clips"][-1]
    assert dialogue["speakers_found"] == 2 and dialogue["der"] < 0.1, dialogue
    long = raw["sections"]["long"]["clips"][0]
    assert long["status"] == "completed" and long["peak_rss"] > 50e6 and long["total_s"] > 0, long
    wyoming = raw["sections"]["wyoming"]["models"]["tiny.en"]
    assert wyoming["warm"]["burst"]["after_stop"]["median"] > 0 and "Wyoming voice commands" in text
    assert any("living room" in t for t in wyoming["warm"]["spoken"]["texts"])
    found = raw["sections"]["search"]
    assert found["segments"] == 2000 and 0 < found["p50_ms"] <= found["p95_ms"] <= found["max_ms"], found
    idle = raw["sections"]["idle"]["idle_stop"]
    assert 1.0 <= idle["idle_to_gone_s"] < 30, idle  # the watcher's window, then the drain
    batched = raw["sections"]["batched"]
    assert batched["times"]["daemon"]["median"] > 0 and set(batched["wer"]) == {
        "daemon",
        "direct",
        "library",
        "library_ts",
        "plain",
    }
    assert "11. Long files batched" in text
    pol = raw["sections"]["policies"]["models"]["tiny.en"]["table"]
    assert {k for k in pol} == {f"{p}:{n}" for p in ("replicas", "split", "every-core") for n in (1, 2)}, pol
    assert all(v["tp_ratio"]["median"] > 0 for v in pol.values()) and pol["replicas:1"]["lone_ratio"]["median"] > 0
    assert "bench:policies:begin" in text
    if coldstart.available() is None:
        phases = raw["sections"]["coldstart"]["phases"]
        assert phases["model_load"]["median"] > 0 and phases["total"]["median"] > phases["model_load"]["median"]
        # the stand-in forwarded the request only after the daemon's READY=1, as the proxy unit does
        assert phases["ready"]["median"] >= 0 and phases["request_in"]["median"] > 0
