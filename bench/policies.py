"""Section `policies` (issue 17): model × thread policy × clients, through the daemon over HTTP.

For each model (tiny.en and base) one daemon per `ASR_THREAD_POLICY` (replicas, split, every-core)
runs at once, and the library (faster-whisper in this process, `cpu_threads` = every core) beside
them. Each round runs, on the same clip:
- one client: `SEQ_JOBS` turns, each one library transcription and one request to every policy's
  daemon, the first side rotating (the lone-request ratio is the median of the turns' ratios; the
  library's total is its sequential throughput for the round);
- every level of 2 or more clients (ascending, then descending the next round) against every policy's daemon,
  the policies' order rotating round by round; each level sends `max(jobs, clients)` clips
  through `POST /v1/audio/transcriptions` from that many client threads.
Both sides decode with the same options: beam 5, no VAD, no word timestamps, timestamps on,
temperature fallback and language as faster-whisper's defaults (the daemon's defaults; tiny.en is
English-only, base detects the language on both sides), the audio decoded inside the timed call.
Ratios are taken within each round; the table gives their medians.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import httpx

from bench import direct, stack, stats
from bench.clips import Clip
from bench.sections import _load

POLICIES = ("replicas", "split", "every-core")
SEQ_JOBS = 4
LONE_GOAL, LONE_FLOOR, PAIR_GOAL = 1.02, 1.05, 1.9


def section(
    svc: stack.Services,
    work: Path,
    clip: Clip,
    models: list[str],
    levels: list[int],
    rounds: int,
    jobs: int,
    env: dict[str, str],
) -> dict[str, Any]:
    """Every model in turn: its daemons started, `rounds` rounds, stopped. Raw rounds and medians."""
    out: dict[str, Any] = {"clip": clip.name, "seconds": clip.seconds, "levels": levels, "rounds": rounds}
    out["models"] = {m: _model(svc, work / m, clip, m, levels, rounds, jobs, env) for m in models}
    return out


def _model(
    svc: stack.Services,
    work: Path,
    clip: Clip,
    model: str,
    levels: list[int],
    rounds: int,
    jobs: int,
    env: dict[str, str],
) -> dict[str, Any]:
    lib = direct.load(stack.models_dir() / model)
    data = clip.path.read_bytes()
    daemons = {
        p: stack.make_daemon(svc, work / p, **{**env, "ASR_MODEL": model, "ASR_THREAD_POLICY": p}) for p in POLICIES
    }
    runs: list[dict[str, Any]] = []
    try:
        for d in daemons.values():
            d.start()
            with httpx.Client(base_url=d.url, timeout=3600) as c:
                for _ in range(2):  # the model load and first-call costs (both copies under replicas)
                    stack.post_transcription(c, clip.name, data)
        lib.run(clip.path)
        for rnd in range(rounds):
            names = list(POLICIES[rnd % len(POLICIES) :] + POLICIES[: rnd % len(POLICIES)])
            lone = _lone(lib, {p: daemons[p].url for p in names}, clip, data)
            lib_t = lone.pop("library")
            lone_lib = statistics.median(lib_t)
            seq_tp = len(lib_t) * clip.seconds / sum(lib_t)
            for p, got in lone.items():
                tp = len(got) * clip.seconds / sum(got)
                runs.append(
                    {
                        "round": rnd,
                        "policy": p,
                        "clients": 1,
                        "lib_lone_s": lone_lib,
                        "lib_seq_tp": seq_tp,
                        "lone_s": statistics.median(got),
                        "lone_ratio": statistics.median(d / a for d, a in zip(got, lib_t, strict=True)),
                        "tp": tp,
                        "tp_ratio": tp / seq_tp,
                        "e2e_p95": None,
                        "errors": [],
                    }
                )
            many = [n for n in levels if n > 1]
            for n in many if rnd % 2 == 0 else list(reversed(many)):
                for p in names:
                    r = _load(daemons[p].url, clip, data, n, max(jobs, n))
                    runs.append(
                        {
                            "round": rnd,
                            "policy": p,
                            "clients": n,
                            "lib_lone_s": lone_lib,
                            "lib_seq_tp": seq_tp,
                            "lone_s": None,
                            "lone_ratio": None,
                            "tp": r["audio_per_wall"],
                            "tp_ratio": r["audio_per_wall"] / seq_tp,
                            "e2e_p95": r["e2e_p95"],
                            "errors": r["errors"],
                        }
                    )
    finally:
        for d in daemons.values():
            d.stop()
    table: dict[str, Any] = {}
    for p in POLICIES:
        for n in levels:
            rs = [r for r in runs if r["policy"] == p and r["clients"] == n]
            table[f"{p}:{n}"] = {
                k: stats.summary([r[k] for r in rs if r[k] is not None]) for k in ("lone_s", "lone_ratio", "tp_ratio")
            }
    return {
        "library_threads": lib.threads,
        "library_lone": stats.summary([r["lib_lone_s"] for r in runs if r["policy"] == POLICIES[0]]),
        "runs": runs,
        "table": table,
    }


def _lone(lib: direct.Direct, urls: dict[str, str], clip: Clip, data: bytes) -> dict[str, list[float]]:
    """`SEQ_JOBS` turns of one request each: the library, then every daemon (first side rotating).

    Interleaving request by request keeps a drift of the machine's speed out of the ratio."""
    cs = {p: httpx.Client(base_url=u, timeout=3600) for p, u in urls.items()}
    sides = ["library", *cs]
    out: dict[str, list[float]] = {k: [] for k in sides}
    try:
        for j in range(SEQ_JOBS):
            for side in sides[j % len(sides) :] + sides[: j % len(sides)]:
                if side == "library":
                    out[side].append(lib.run(clip.path)[0])
                else:
                    out[side].append(stack.post_transcription(cs[side], clip.name, data)[0])
    finally:
        for c in cs.values():
            c.close()
    return out


def render(s: dict[str, Any]) -> list[str]:
    """The model × policy × clients table, and a line per model saying which policy meets what."""
    levels = s["levels"]
    out = [
        (
            f"Models {', '.join(s['models'])}: per model one daemon per policy (`ASR_MODEL` and `ASR_THREAD_POLICY` "
            "set, the model line above notwithstanding), `ASR_WORKERS=2`. "
            f"Clip {s['clip']} ({s['seconds']:.0f} s), {s['rounds']} rounds; per round {SEQ_JOBS} turns of one "
            "library transcription and one request to each policy's daemon (first side rotating), then every "
            "level of 2+ clients against every policy's daemon (order rotating). "
            f"Lone: 1 client, the request's median time ÷ the library's (goal ≤ {LONE_GOAL}, floor ≤ {LONE_FLOOR}); "
            f"throughput: audio-s per wall-s ÷ the library's sequential (goal ≥ {PAIR_GOAL}× at 2–16 clients). "
            "Same decoding on both sides: beam 5, no VAD, no word timestamps, faster-whisper's default "
            "temperatures and language handling, the file decoded inside the timed call; the library with "
            "`cpu_threads` = every core."
        ),
        "",
        "| model | policy | lone request | lone ÷ library | "
        + " | ".join(f"× library sequential, {n} client{'s' if n > 1 else ''}" for n in levels)
        + " |",
        "|---|---|---|---|" + "---|" * len(levels),
    ]
    verdicts = []
    for m, r in s["models"].items():
        lib = r["library_lone"]
        out.append(
            f"| {m} | library (`cpu_threads={r['library_threads']}`) | {stats.fmt(lib)} | 1.00 | "
            + " | ".join("1.00×" for _ in levels)
            + " |"
        )
        for p in POLICIES:
            row = [r["table"][f"{p}:{n}"] for n in levels]
            lone = r["table"][f"{p}:1"] if 1 in levels else None
            lr = lone["lone_ratio"]["median"] if lone else None
            tps = [x["tp_ratio"]["median"] for n, x in zip(levels, row, strict=True) if n >= 2]
            out.append(
                f"| {m} | `{p}` | {stats.fmt(lone['lone_s']) if lone else '—'} | "
                f"{stats.fmt(lone['lone_ratio'], '', 3) if lone else '—'} | "
                + " | ".join(f"{stats.fmt(x['tp_ratio'], '×')}" for x in row)
                + " |"
            )
            if lr is not None and tps:
                ok_lone = "goal met" if lr <= LONE_GOAL else "floor met" if lr <= LONE_FLOOR else "not met"
                ok_tp = "met" if min(tps) >= PAIR_GOAL else f"not met (lowest {min(tps):.2f}×)"
                verdicts.append(f"- {m}, `{p}`: lone {lr:.3f} ({ok_lone}); throughput ≥ {PAIR_GOAL}× at 2–16: {ok_tp}.")
    return [*out, "", *verdicts]
