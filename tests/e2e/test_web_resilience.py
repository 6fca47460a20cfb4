"""The page in real chromium when things go wrong: many unfinished jobs (the browser's 6 connections
per host), a daemon restart under an open transcript, a revoked key, switching jobs while a keyed
audio download runs, reopening a job (its audio not downloaded again), and speaker names that look
like other speakers' labels."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import signal
import struct
import time
import uuid
import wave
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from playwright.sync_api import Request, expect

from asr_daemon import jobs, queries
from asr_daemon.diarization import store
from asr_daemon.diarization.engine import Turn
from tests import stored
from tests.conftest import Daemon
from tests.e2e import test_web_browser as web_page
from tests.e2e.test_jobs import submit, wait_status
from tests.e2e.test_keys import asrctl, bearer, create_key
from tests.e2e.test_web_browser import TIMEOUT_MS, Tab, ready, upload

browser = web_page.browser  # the page tests' chromium and tab fixtures, shared by name
tab = web_page.tab


def use_key(tab: Tab, daemon: Daemon, token: str) -> None:
    """Open the page of a daemon with keys and give `token` in the key dialog."""
    page = tab.open(daemon)
    dialog = page.get_by_role("dialog", name="API key")
    page.get_by_label("Key", exact=True).fill(token)
    dialog.get_by_role("button", name="Use key").click()
    ready(page)


def test_eight_queued_jobs_leave_the_page_answering(
    tab: Tab, make_daemon: Callable[..., Daemon], speech: Callable[..., Path]
) -> None:
    """With 8 jobs queued (no worker) the page gets ready and a search answers within 10 s, and 7 files
    picked at once become 7 jobs: no request waits behind one open event stream per unfinished job."""
    d = make_daemon(ASR_RUN_WORKER="false")
    with d.client() as c:
        for i in range(8):
            assert submit(c, speech(f"Number {i} of the queue.")).status_code == 202
    page = tab.open(d)
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=10_000)
    expect(page.locator("li.job")).to_have_count(8)
    page.get_by_role("searchbox", name="Search transcripts").fill("queue")
    expect(page.locator("#results-status")).to_have_text("Nothing matches “queue”.", timeout=10_000)  # the answer
    streams = [u for u in tab.urls if u.endswith("/events")]
    assert streams == [], streams  # nothing is open in Transcript: no stream at all

    files = [speech(f"File number {i} for the picker.") for i in range(7)]
    upload(page, files)  # type: ignore[arg-type]  # several paths: Playwright takes a list
    deadline = time.monotonic() + 30
    with d.client() as c:
        while time.monotonic() < deadline:
            total = len(c.get("/v1/jobs", params={"limit": 50}).json()["data"])
            if total == 15:
                break
            time.sleep(0.5)
    assert total == 15, f"{total - 8} of 7 picked files reached the server"
    expect(page.locator("li.job")).to_have_count(15, timeout=10_000)
    tab.shot("fifteen-queued")
    assert tab.csp_violations() == []


@pytest.mark.slow
def test_a_transcript_open_across_a_long_restart_completes_with_exports(
    tab: Tab, make_daemon: Callable[..., Daemon], two_minutes: Path
) -> None:
    """The daemon killed for 12 s while the open job runs: once it has completed after the restart,
    the view shows every stored segment and the export buttons, and its row says completed."""
    d = make_daemon()
    page = tab.open(d)
    ready(page)
    upload(page, two_minutes)
    transcript = page.get_by_role("region", name="Transcript", exact=True)
    expect(transcript.locator("li.seg").first).to_be_visible(timeout=TIMEOUT_MS)
    job_id = page.locator("li.job.selected").get_attribute("data-id")
    d.stop(signal.SIGKILL, timeout=10)
    time.sleep(12)  # longer than the old stream's six tries
    d.start()
    with d.client() as c:
        wait_status(c, str(job_id), {"completed"}, timeout=300)
        stored = len(c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["segments"])
    expect(transcript.locator(".export")).to_be_visible(timeout=30_000)
    expect(transcript.locator("li.seg")).to_have_count(stored)
    expect(page.locator("li.job.selected .status")).to_have_text("completed")
    tab.shot("after-restart")


def test_a_revoked_key_stops_the_polling_without_a_dialog(
    tab: Tab, make_daemon: Callable[..., Daemon], database: str
) -> None:
    """After the page's key is revoked, background polling opens no key dialog (15 s watched) and
    a notice says the server refused the key."""
    token = create_key(database, "k")
    d = make_daemon(ASR_AUTH="on", ASR_RUN_WORKER="false")
    use_key(tab, d, token)
    page = tab.page
    assert asrctl(database, "keys", "revoke", "k").returncode == 0
    dialog = page.get_by_role("dialog", name="API key")
    opened = 0
    for _ in range(30):
        page.wait_for_timeout(500)
        if dialog.is_visible():
            opened += 1
            dialog.get_by_role("button", name="Cancel").click()
    assert opened == 0
    expect(page.locator("#notice")).to_contain_text("refused the API key")
    expect(page.locator("#notice")).to_have_class("notice error")
    tab.shot("revoked")


def _tone(path: Path, seconds: int, hz: float) -> Path:
    """A 16 kHz mono 16-bit WAV tone (a few MB: its download is slow under the throttled network)."""
    period = [int(3000 * math.sin(2 * math.pi * hz * i / 16000)) for i in range(16000)]
    second = struct.pack(f"<{len(period)}h", *period)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        for _ in range(seconds):
            w.writeframes(second)
    return path


def test_opening_another_job_aborts_the_keyed_audio_download(
    tab: Tab, make_daemon: Callable[..., Daemon], database: str, tmp_path: Path
) -> None:
    """With a key the page downloads a job's audio; opening another job before it has arrived cancels
    that download (the browser reports the request failed) rather than reading it to the end."""
    token = create_key(database, "k")
    d = make_daemon(ASR_AUTH="on", ASR_RUN_WORKER="false")
    with d.client() as c:
        for name, hz in (("one.wav", 440.0), ("two.wav", 330.0)):
            r = submit(c, _tone(tmp_path / name, 90, hz), headers=bearer(token))
            assert r.status_code == 202, r.text
    failed: list[str] = []
    finished: list[str] = []
    tab.page.on("requestfailed", lambda r: failed.append(r.url) if r.url.endswith("/audio") else None)
    tab.page.on("requestfinished", lambda r: finished.append(r.url) if r.url.endswith("/audio") else None)
    use_key(tab, d, token)
    page = tab.page
    cdp = tab.context.new_cdp_session(page)  # ~2.9 MB at 300 kB/s: about 10 s per download
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": 300_000, "uploadThroughput": -1},
    )
    opens = page.locator("li.job button.job-open")
    first_id = page.locator("li.job").nth(0).get_attribute("data-id")
    with page.expect_request(lambda r: r.url.endswith(f"/v1/jobs/{first_id}/audio")):
        opens.nth(0).click()
    page.wait_for_timeout(500)
    with page.expect_event("requestfailed", timeout=5000, predicate=lambda r: _is_audio(r, first_id)):
        opens.nth(1).click()
    assert not any(first_id and first_id in u for u in finished), finished
    unthrottled = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", unthrottled)
    page.wait_for_function("() => document.getElementById('player').readyState >= 1", timeout=30_000)
    expect(page.locator("#notice")).not_to_have_class("notice error")


def test_reopening_a_job_does_not_download_its_audio_again(
    tab: Tab, make_daemon: Callable[..., Daemon], database: str, tmp_path: Path
) -> None:
    """With a key, a job opened again after another one plays from the browser's copy of its audio
    (cached, or revalidated with a 304): the whole file is not sent twice."""
    token = create_key(database, "k")
    d = make_daemon(ASR_AUTH="on", ASR_RUN_WORKER="false")
    with d.client() as c:
        for name, hz in (("one.wav", 440.0), ("two.wav", 330.0)):
            assert submit(c, _tone(tmp_path / name, 30, hz), headers=bearer(token)).status_code == 202
    use_key(tab, d, token)
    page = tab.page
    opens = page.locator("li.job button.job-open")
    first_id = page.locator("li.job").nth(0).get_attribute("data-id")
    loaded = "() => document.getElementById('player').readyState >= 1"
    for i in (0, 1, 0):
        opens.nth(i).click()
        page.wait_for_function(loaded, timeout=30_000)
        page.wait_for_timeout(200)
    sizes = page.evaluate(
        "(id) => performance.getEntriesByType('resource')"
        ".filter((e) => e.name.endsWith(`/v1/jobs/${id}/audio`)).map((e) => e.transferSize)",
        first_id,
    )
    assert len(sizes) == 2 and sizes[0] > 900_000, sizes  # 30 s of 16-bit 16 kHz: 960 kB, fetched once
    assert sizes[1] < 2_000, sizes  # 0 from the cache, a few hundred bytes of headers for a 304
    expect(page.locator("#notice")).not_to_have_class("notice error")


def _is_audio(request: Request, job_id: str | None) -> bool:
    return job_id is not None and request.url.endswith(f"/v1/jobs/{job_id}/audio")


async def _diarized_job(url: str, texts: list[str], names: dict[str, str]) -> uuid.UUID:
    """A completed diarized job (speakers A and B alternating, named `names`) stored as the worker does."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            for typ in ("json", "jsonb"):
                await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            opts = jobs.Options(diarization=jobs.DiarizationOptions())
            job_id = await stored.running_job(conn, texts, options=opts)
            assert await store.begin(conn, job_id, "w", "test")
        turns = [Turn(2.0 * i, 2.0 * i + 2, i % 2) for i in range(len(texts))]
        assert await store.finish(pool, job_id, "w", turns, names, 1.0, 2.0 * len(texts))
        async with pool.acquire() as conn:
            await queries.complete(conn, job_id, "w", {}, "cpu")
    finally:
        await pool.close()
    return job_id


def test_speaker_chips_carry_the_servers_label_when_a_name_looks_like_a_label(
    tab: Tab, make_daemon: Callable[..., Daemon], database: str
) -> None:
    """Speaker A named "B" beside an unnamed B: each segment's chip carries the server's label, and
    renaming A from a chip renames only A's segments."""
    d = make_daemon(ASR_RUN_WORKER="false")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        made = _diarized_job(database, [" One.", " Two.", " Three.", " Four."], {"A": "B"})
        job_id = pool.submit(asyncio.run, made).result()

    def server() -> list[tuple[str, str]]:
        with d.client() as c:
            body = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()
        return [(s["speaker_label"], s["speaker"]) for s in body["segments"]]

    assert server() == [("A", "B"), ("B", "B"), ("A", "B"), ("B", "B")]
    page = tab.open(d)
    ready(page)
    page.locator(f'li.job[data-id="{job_id}"] .job-open').click()
    chips = page.locator("#segments li.seg .speaker")
    expect(chips).to_have_count(4)
    assert [c.get_attribute("data-label") for c in chips.all()] == ["A", "B", "A", "B"]
    chips.nth(0).click()
    dialog = page.get_by_role("dialog", name="Rename speaker")
    dialog.get_by_label("Name").fill("Alice")
    dialog.get_by_role("button", name="Save").click()
    expect(chips).to_have_text(["Alice", "B", "Alice", "B"])
    assert server() == [("A", "Alice"), ("B", "B"), ("A", "Alice"), ("B", "B")]
    assert [c.get_attribute("data-label") for c in chips.all()] == [label for label, _ in server()]
    assert tab.csp_violations() == []
