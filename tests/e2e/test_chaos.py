"""Chaos against the real daemon, PostgreSQL and Redis: random kill -9, a database outage, Redis
stopped and flushed, a full uploads disk. Nothing accepted is lost, duplicated or half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import STORY, Daemon, leftover_files


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def dbname(d: Daemon) -> str:
    """The daemon's database name."""
    return d.env["ASR_DATABASE_URL"].rsplit("/", 1)[1]


def sql_json(pg: services.Postgres, d: Daemon, query: str) -> list[dict[str, object]]:
    """Rows of `query` as dicts (through psql and json_agg)."""
    out = pg.psql(f"SELECT coalesce(json_agg(q), '[]') FROM ({query}) q", dbname(d))
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def wait_all_finished(pg: services.Postgres, d: Daemon, timeout: float) -> list[dict[str, object]]:
    """Poll the database until no job is queued or running; returns every job."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = sql_json(pg, d, "SELECT id, status, attempts, error, audio_sha256 FROM jobs")
        if all(j["status"] not in ("queued", "running") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, Counter(str(j["status"]) for j in jobs)
        time.sleep(0.5)


def check_segments(pg: services.Postgres, d: Daemon, expected_words: dict[str, int]) -> None:
    """Every job's segments are numbered 0..n-1 with non-decreasing times, and its text is not doubled."""
    segs = sql_json(pg, d, "SELECT job_id, seq, start_s, end_s, text FROM segments ORDER BY job_id, seq")
    by_job: dict[str, list[dict[str, object]]] = {}
    for s in segs:
        by_job.setdefault(str(s["job_id"]), []).append(s)
    for job_id, n_words in expected_words.items():
        rows = by_job.get(job_id, [])
        assert [r["seq"] for r in rows] == list(range(len(rows))) and rows, f"{job_id}: gaps in {rows}"
        starts = [float(str(r["start_s"])) for r in rows]
        ends = [float(str(r["end_s"])) for r in rows]
        assert starts == sorted(starts) and ends == sorted(ends), f"{job_id}: times go back: {starts} {ends}"
        assert all(s <= e for s, e in zip(starts, ends, strict=True))
        got = len(words(" ".join(str(r["text"]) for r in rows)))
        assert 0.6 * n_words <= got <= 1.3 * n_words, f"{job_id}: {got} words, expected about {n_words}"


@pytest.fixture
def clips(speech: Callable[..., Path]) -> list[tuple[Path, int]]:
    """Four ~7 s clips of two sentences (two segments or more each) and their word counts."""
    return [(speech(s), len(words(s))) for s in STORY[:4]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    make_daemon: Callable[..., Daemon],
    pg: services.Postgres,
    clips: list[tuple[Path, int]],
    speech: Callable[..., Path],
) -> None:
    """24 jobs (two of ~1 min, windowed), SIGKILL at random moments, restarts: each completes once, intact."""
    seed = int(os.environ.get("ASR_TEST_SEED", time.time()))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (rerun with ASR_TEST_SEED={seed})")
    d = make_daemon(
        ASR_DEDUP="false",
        ASR_MAX_ATTEMPTS="100",
        ASR_STALE_AFTER="2",
        ASR_RETRY_BACKOFF="0.1",
        ASR_PRELOAD="true",
        ASR_WINDOW_SECONDS="30",
    )
    accepted: dict[str, int] = {}
    long_text = " ".join(STORY[:8])
    long_clip = (speech(long_text), len(words(long_text)))
    short = [clips[i % len(clips)] for i in range(22)]
    rng.shuffle(short)

    def submit(c: httpx.Client, clip: tuple[Path, int], priority: int = 0) -> str:
        r = c.post("/v1/jobs", files={"file": clip[0].open("rb")}, data={"temperature": "0", "priority": str(priority)})
        assert r.status_code == 202, r.text
        accepted[r.json()["id"]] = clip[1]
        return str(r.json()["id"])

    # one deterministic kill in the middle of a windowed job (a window stored, the next one running),
    # so that a resume from stored segments always happens; then kills at random moments
    with d.client(timeout=30) as c:
        first_long = submit(c, long_clip, priority=10)
        submit(c, long_clip, priority=10)
    deadline = time.monotonic() + 120
    while not sql_json(pg, d, f"SELECT 1 FROM segments WHERE job_id = '{first_long}'"):
        assert time.monotonic() < deadline, "the long job stored no segment"
        time.sleep(0.05)
    d.stop(signal.SIGKILL)
    d.start()
    for _ in range(12):  # random kills
        with d.client(timeout=30) as c:
            for _ in range(min(len(short), rng.randint(1, 4))):
                submit(c, short.pop())
        time.sleep(rng.uniform(0.3, 6.0))
        d.stop(signal.SIGKILL)
        d.start()
    with d.client(timeout=30) as c:
        for clip in short:
            submit(c, clip)
    jobs = wait_all_finished(pg, d, timeout=240)
    assert {str(j["id"]) for j in jobs} >= set(accepted), "an accepted job is missing"
    assert all(j["status"] == "completed" for j in jobs), [j for j in jobs if j["status"] != "completed"]
    assert len(accepted) == 24
    check_segments(pg, d, accepted)
    completions = Counter(
        json.loads(line)["job_id"]
        for line in d.logs().splitlines()
        if line.startswith("{") and '"job_completed"' in line
    )
    assert max(completions.values(), default=0) <= 1, "a job completed twice"
    assert '"job_started"' in d.logs() and any(
        json.loads(line).get("resume_from", 0) > 0 for line in d.logs().splitlines() if '"job_started"' in line
    ), "no job resumed from stored segments"
    assert not leftover_files(d.state_dir)


class Submitter(threading.Thread):
    """Submits a clip every `interval` seconds until stopped; records (time, status, Retry-After, job id)."""

    def __init__(self, d: Daemon, clip: Path, interval: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.d, self.clip, self.interval = d, clip, interval
        self.results: list[tuple[float, int, str | None, str | None]] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with self.d.client(timeout=30) as c:
            n = 0
            while not self.halt.is_set():
                n += 1
                try:
                    r = c.post("/v1/jobs", files={"file": self.clip.open("rb")}, data={"priority": str(n % 100)})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                else:
                    jid = r.json().get("id") if r.status_code == 202 else None
                    self.results.append((time.monotonic(), r.status_code, r.headers.get("retry-after"), jid))
                self.halt.wait(self.interval)


@pytest.mark.slow
def test_postgres_down_for_10_s_during_submissions(
    make_daemon: Callable[..., Daemon], pg: services.Postgres, jfk: Path
) -> None:
    """PostgreSQL stopped 10 s under load: 503 + Retry-After meanwhile, no orphan row or file, recovery."""
    d = make_daemon(ASR_DEDUP="false")
    assert d.proc is not None
    pid = d.proc.pid
    sub = Submitter(d, jfk)
    sub.start()
    time.sleep(2)
    pg.stop()
    down_at = time.monotonic()
    try:
        time.sleep(10)
    finally:
        up_at = time.monotonic()  # before pg.start(): PostgreSQL may accept connections before pg_ctl returns
        pg.start()
    time.sleep(6)
    sub.halt.set()
    sub.join(60)
    assert not sub.errors, sub.errors[:3]
    statuses = Counter(code for _, code, _, _ in sub.results)
    assert set(statuses) <= {202, 503}, statuses
    during = [(code, ra) for t, code, ra, _ in sub.results if down_at + 1 < t < up_at]
    assert during and all(code == 503 and ra and int(ra) > 0 for code, ra in during), during
    assert sub.results[-1][1] == 202, "no recovery without a restart"
    assert d.proc is not None and d.proc.pid == pid and d.proc.poll() is None
    assert httpx.get(d.url + "/readyz", timeout=5).status_code == 200
    accepted = {jid for _, code, _, jid in sub.results if code == 202 and jid}
    jobs = wait_all_finished(pg, d, timeout=300)
    assert {str(j["id"]) for j in jobs} == accepted, "a 503 left a row, or a 202 lost one"
    assert all(j["status"] == "completed" for j in jobs)
    stored = {p.name for p in (d.state_dir / "uploads").iterdir() if p.is_file()}
    assert stored == {str(j["audio_sha256"]) for j in jobs}, "audio without a job, or a job without audio"
    assert not leftover_files(d.state_dir)


@pytest.mark.slow
def test_redis_stopped_and_flushed_during_a_run_loses_nothing(
    make_daemon: Callable[..., Daemon],
    pg: services.Postgres,
    redis_server: services.Redis,
    clips: list[tuple[Path, int]],
) -> None:
    """Redis flushed, then killed mid-run, then back empty: every job submitted in between completes."""
    d = make_daemon(ASR_DEDUP="false")
    accepted: dict[str, int] = {}

    def submit(n: int) -> None:
        with d.client() as c:
            for i in range(n):
                path, n_words = clips[i % len(clips)]
                r = c.post("/v1/jobs", files={"file": path.open("rb")})
                assert r.status_code == 202, r.text
                accepted[r.json()["id"]] = n_words

    try:
        submit(4)
        subprocess.run(["redis-cli", "-p", str(redis_server.port), "FLUSHALL"], check=True, capture_output=True)
        time.sleep(1)
        redis_server.stop()
        submit(4)
        time.sleep(3)
    finally:
        redis_server.start()  # a fresh process without persistence: empty
    submit(3)
    jobs = wait_all_finished(pg, d, timeout=300)
    assert {str(j["id"]) for j in jobs} == set(accepted)
    assert all(j["status"] == "completed" for j in jobs), jobs
    check_segments(pg, d, accepted)
    assert httpx.get(d.url + "/readyz", timeout=5).status_code == 200


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[None]:
    """Mount a small tmpfs at `path` (needs root); skip the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full test needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_space(uploads: Path) -> list[Path]:
    """Fill the file system's bytes with one file."""
    filler = uploads / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
    return [filler]


def fill_inodes(uploads: Path) -> list[Path]:
    """Use up the file system's inodes with empty files (after `tmp/` exists, as after a first upload:
    the upload's own temporary file is what cannot be created)."""
    (uploads / "tmp").mkdir(exist_ok=True)
    fillers: list[Path] = []
    with contextlib.suppress(OSError):
        for n in range(1000):
            (uploads / f"filler{n}").touch()
            fillers.append(uploads / f"filler{n}")
    assert len(fillers) < 1000, "the inode limit did not apply"
    return fillers


@pytest.mark.parametrize(
    ("options", "fill"),
    [("size=2m", fill_space), ("size=8m,nr_inodes=64", fill_inodes)],
    ids=["no-space", "no-inode"],
)
def test_full_uploads_disk_gives_507_and_recovers(
    make_daemon: Callable[..., Daemon],
    pg: services.Postgres,
    jfk: Path,
    options: str,
    fill: Callable[[Path], list[Path]],
) -> None:
    """A full tmpfs (no space, or no inode): 507 + Retry-After, no partial file or row; works once space returns."""
    d = make_daemon(start=False)
    uploads = d.state_dir / "uploads"
    with tmpfs(uploads, options):
        d.start()
        fillers = fill(uploads)
        with d.client() as c:
            r = c.post("/v1/jobs", files={"file": jfk.open("rb")})
            assert r.status_code == 507, r.text
            assert int(r.headers["retry-after"]) > 0 and "disk is full" in r.json()["error"]["message"]
            assert not leftover_files(d.state_dir)
            assert sql_json(pg, d, "SELECT id FROM jobs") == []
            assert sorted(p.name for p in uploads.iterdir()) == sorted([f.name for f in fillers] + ["tmp"])
            for f in fillers:
                f.unlink()
            r = c.post("/v1/jobs", files={"file": jfk.open("rb")})
            assert r.status_code == 202, r.text
        jobs = wait_all_finished(pg, d, timeout=120)
        assert [j["status"] for j in jobs] == ["completed"]
        d.stop()
