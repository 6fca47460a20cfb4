"""The search section: `GET /v1/search` latency over HTTP on 100,000 stored segments (goal: p95 ≤ 50 ms).

The archive is synthetic but shaped like speech: 1,000 completed English jobs of 100 segments, each
segment 8–20 words drawn with Zipf's law (s = 1) from a vocabulary whose most frequent ~100 words
are English stop words (as in real speech) followed by 20,000 made-up content words, so the most
common content words are in about a thousand segments and most in a handful.
Queries are drawn the same way in classes (a common word, a medium one, a rare one, two words, a
quoted phrase, `or`, `-word`); each is sent through the real daemon (Granian, the app, asyncpg) one
at a time, after one untimed warm-up pass.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import stack, stats

#: English stop words (PostgreSQL's list drops them), the most frequent words of speech
STOP = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "i",
    "his",
    "they",
    "be",
    "at",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "if",
    "will",
    "about",
    "then",
    "them",
    "these",
    "so",
    "her",
    "would",
    "him",
    "into",
    "has",
    "more",
    "two",
    "no",
    "could",
    "my",
    "than",
    "been",
    "who",
    "its",
    "now",
    "did",
    "down",
    "only",
    "just",
    "over",
    "our",
    "me",
    "very",
    "through",
    "most",
    "any",
    "same",
    "those",
    "here",
    "why",
    "off",
    "again",
    "both",
    "few",
    "own",
    "too",
    "being",
    "where",
    "after",
]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "ze",
    "ba",
    "de",
    "fi",
    "go",
    "hu",
    "ja",
    "ko",
    "lu",
    "ma",
    "no",
    "pe",
    "qui",
    "ra",
    "si",
    "to",
    "ur",
    "ve",
    "wa",
    "xe",
    "yo",
    "zu",
]
JOBS = 1000
SEGMENTS_PER_JOB = 100
VOCABULARY = 20_000
CLASSES = ("common", "medium", "rare", "two words", "phrase", "or", "minus")


def vocabulary(rng: random.Random, n: int = VOCABULARY) -> list[str]:
    """`n` distinct pronounceable made-up words (the English stemmer leaves most of them whole)."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def sentences(rng: random.Random, words: list[str], count: int) -> list[str]:
    """`count` segment texts, Zipf-distributed over the stop words then the content words."""
    ranked = STOP + words
    weights = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(ranked))))
    out = []
    for _ in range(count):
        picked = rng.choices(ranked, cum_weights=weights, k=rng.randint(8, 20))
        out.append(" " + " ".join(picked).capitalize() + ".")
    return out


def queries(rng: random.Random, words: list[str], per_class: int) -> list[tuple[str, str]]:
    """(class, query) pairs: `per_class` of each class, shuffled."""

    def pick(lo: int, hi: int) -> str:
        return words[rng.randrange(lo, hi)]

    made: list[tuple[str, str]] = []
    for _ in range(per_class):
        made += [
            ("common", pick(0, 10)),
            ("medium", pick(100, 1000)),
            ("rare", pick(1000, len(words))),
            ("two words", f"{pick(0, 100)} {pick(10, 1000)}"),
            ("phrase", f'"{pick(0, 50)} {pick(0, 50)}"'),
            ("or", f"{pick(100, 1000)} or {pick(100, 1000)}"),
            ("minus", f"{pick(10, 100)} -{pick(0, 50)}"),
        ]
    rng.shuffle(made)
    return made


async def fill(url: str, rng: random.Random, words: list[str], jobs: int = JOBS) -> float:
    """Insert the synthetic archive (jobs, then segments with COPY; the trigger computes the vectors)."""
    t0 = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        ids = [uuid.uuid4() for _ in range(jobs)]
        await conn.copy_records_to_table(
            "jobs",
            columns=["id", "status", "model", "fingerprint", "audio_sha256", "audio_bytes", "duration_s", "language"],
            records=[(i, "completed", "tiny.en", i.hex, "0" * 64, 1, 300.0, "en") for i in ids],
        )
        for job_id in ids:
            texts = sentences(rng, words, SEGMENTS_PER_JOB)
            await conn.copy_records_to_table(
                "segments",
                columns=["job_id", "seq", "start_s", "end_s", "text"],
                records=[(job_id, n, 3.0 * n, 3.0 * n + 3, t) for n, t in enumerate(texts)],
            )
        await conn.execute("ANALYZE jobs; ANALYZE segments")
    finally:
        await conn.close()
    return time.perf_counter() - t0


def search_latency(
    svc: stack.Services, work: Path, env: dict[str, str], per_class: int = 30, jobs: int = JOBS
) -> dict[str, Any]:
    """p50/p95 of GET /v1/search by query class and overall, on `jobs` x 100 segments (100,000)."""
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20)
    words = vocabulary(rng)
    d = stack.make_daemon(svc, work, **env)
    d.start()
    try:
        fill_s = asyncio.run(fill(d.env["ASR_DATABASE_URL"], rng, words, jobs))
        qs = queries(rng, words, per_class)
        times: dict[str, list[float]] = {c: [] for c in CLASSES}
        with httpx.Client(base_url=d.url, timeout=30) as c:
            for _, q in qs:  # warm-up: caches, the plan, the connection pool
                c.get("/v1/search", params={"q": q, "limit": 20}).raise_for_status()
            for kind, q in qs:
                t0 = time.perf_counter()
                r = c.get("/v1/search", params={"q": q, "limit": 20})
                times[kind].append(time.perf_counter() - t0)
                r.raise_for_status()
        everything = [t for ts in times.values() for t in ts]
        per_class_out = {
            kind: {
                "p50_ms": 1000 * (stats.percentile(ts, 50) or 0),
                "p95_ms": 1000 * (stats.percentile(ts, 95) or 0),
                "max_ms": 1000 * max(ts),
                "n": len(ts),
            }
            for kind, ts in times.items()
        }
        common_rows = asyncio.run(_count(d.env["ASR_DATABASE_URL"], words[0]))
    finally:
        d.stop()
    return {
        "segments": jobs * SEGMENTS_PER_JOB,
        "fill_s": fill_s,
        "queries": len(everything),
        "p50_ms": 1000 * (stats.percentile(everything, 50) or 0),
        "p95_ms": 1000 * (stats.percentile(everything, 95) or 0),
        "max_ms": 1000 * max(everything),
        "classes": per_class_out,
        "most_common_word_segments": common_rows,
        "goal_p95_ms": 50,
    }


async def _count(url: str, word: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM segments WHERE search_vector @@ websearch_to_tsquery('english', $1)", word
        )
        return n
    finally:
        await conn.close()
