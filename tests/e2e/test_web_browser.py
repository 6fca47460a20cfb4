"""The web page in a real browser: Debian's chromium driven by Playwright, against the real daemon.

Each test saves a screenshot per page state under var/test-artifacts/web/ (kept for a person to look
at when a test fails, and by CI as artifacts).
"""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests import services
from tests.conftest import ROOT, STORY, Daemon
from tests.e2e.test_jobs import submit, wait_status
from tests.e2e.test_keys import bearer, create_key

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "var" / "test-artifacts" / "web"
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (installed by scripts/bootstrap), headless; Playwright's own download is not used."""
    assert CHROMIUM.exists(), "chromium is missing: run `make deps` (scripts/bootstrap installs it)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--autoplay-policy=no-user-gesture-required",
                "--mute-audio",
                # a microphone that plays a beep, allowed without asking: the recording test
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def web(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon without keys for the module's page tests."""
    return make_module_daemon()


class Tab:
    """One page, its console, dialogs and requests, and a screenshot helper."""

    def __init__(self, context: BrowserContext, name: str) -> None:
        self.context = context
        self.page: Page = context.new_page()
        self.name = name
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.page.set_default_timeout(30_000)

    def shot(self, state: str) -> Path:
        """Save a screenshot of the whole page as <test>-<state>.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{state}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def open(self, daemon: Daemon) -> Page:
        """Load the page and wait until it has listed the jobs."""
        self.page.goto(daemon.url + "/")
        return self.page

    def csp_violations(self) -> list[str]:
        """Console lines where the browser refused something under the Content-Security-Policy."""
        return [line for line in self.console if "Content Security Policy" in line or "Refused to" in line]


@pytest.fixture
def tab(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A fresh browser context (no storage shared between tests) with one page, desktop-sized."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    t = Tab(context, request.node.name.removeprefix("test_")[:60])
    yield t
    context.close()


def ready(page: Page) -> None:
    """The page has loaded its modules and the job list."""
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)


def upload(page: Page, path: Path | dict[str, Any]) -> None:
    """Choose a file in the "Audio file" input (the page sends it at once)."""
    page.get_by_label("Audio file").set_input_files(path)  # type: ignore[arg-type]  # a path or a file payload


@pytest.fixture(scope="module")
def story(speech: Callable[..., Path]) -> Path:
    """About 20 s of three distinct sentences: several segments to click between."""
    return speech(" ".join(STORY[:3]))


def test_upload_shows_the_transcript_and_clicking_a_segment_seeks_and_plays(tab: Tab, web: Daemon, story: Path) -> None:
    """An uploaded file appears in Jobs, its text in the Transcript region, the notice says it is done;
    a click on a later segment seeks the player there, plays, and highlights that segment."""
    page = tab.open(web)
    ready(page)
    tab.shot("empty")
    upload(page, story)
    transcript = page.get_by_role("region", name="Transcript", exact=True)
    expect(page.get_by_role("region", name="Jobs", exact=True)).to_contain_text(story.name)
    expect(transcript).to_contain_text("thousand miles", timeout=TIMEOUT_MS)
    expect(transcript.locator(".export")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#notice")).to_have_text(f"{story.name}: transcribed.")  # not "queued." to the end
    tab.shot("transcript")
    segments = transcript.locator("li.seg")
    assert segments.count() >= 2
    last = segments.last
    last.locator(".seg-text").click()
    page.wait_for_function("() => !document.getElementById('player').paused", timeout=15_000)
    state = page.evaluate(
        "() => { const p = document.getElementById('player'); return {t: p.currentTime, paused: p.paused} }"
    )
    seg_start = _clock(last.locator(".time").inner_text())
    assert state["t"] >= seg_start - 0.5 and not state["paused"], state
    expect(last).to_have_class(re.compile(r"\bcurrent\b"))
    tab.shot("playing")
    assert tab.csp_violations() == [] and tab.dialogs == []


def _clock(text: str) -> float:
    parts = [int(p) for p in text.strip().split(":")]
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return float(seconds)


def test_search_finds_the_words_and_opens_the_job_at_that_second_playing(tab: Tab, web: Daemon, story: Path) -> None:
    """Typing in the "Search transcripts" box lists matching segments with the words marked; choosing
    one opens that job's transcript with the player at that segment's second, playing."""
    with web.client() as c:
        job = wait_status(c, submit(c, story).json()["id"], {"completed"})
        hits = c.get("/v1/search", params={"q": "captains stars"}).json()["data"]
    hit = next(h for h in hits if h["job_id"] == job["id"])
    page = tab.open(web)
    ready(page)
    page.get_by_role("searchbox", name="Search transcripts").fill("captains stars")
    results = page.get_by_role("region", name="Search results")
    first = results.get_by_role("button").filter(has_text=re.compile("captain", re.IGNORECASE)).first
    expect(first).to_be_visible()
    expect(first.locator("mark").first).to_have_text(re.compile("captain|stars", re.IGNORECASE))
    tab.shot("results")
    results.get_by_role("button").filter(has_text=re.compile("captain", re.IGNORECASE)).nth(
        _index_of(hits, job["id"])
    ).click()
    page.wait_for_function("() => !document.getElementById('player').paused", timeout=15_000)
    t = page.evaluate("() => document.getElementById('player').currentTime")
    assert hit["start"] - 0.2 <= t <= hit["start"] + 3, (t, hit)
    expect(page.get_by_role("region", name="Transcript", exact=True)).to_contain_text("captain", ignore_case=True)
    expect(page.locator("li.seg.current")).to_contain_text("captain", ignore_case=True)
    tab.shot("opened")


def _index_of(hits: list[dict[str, Any]], job_id: str) -> int:
    return [h["job_id"] for h in hits].index(job_id)


def test_export_downloads_the_srt(tab: Tab, web: Daemon, jfk: Path) -> None:
    """The SRT button downloads <file stem>.srt with numbered cues; Copy text puts the text on the clipboard."""
    with web.client() as c:
        job = wait_status(c, submit(c, jfk).json()["id"], {"completed"})
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = tab.open(web)
    ready(page)
    page.locator(f'li.job[data-id="{job["id"]}"] .job-open').click()
    expect(page.get_by_role("region", name="Transcript", exact=True)).to_contain_text("country", timeout=30_000)
    with page.expect_download() as info:
        page.get_by_role("button", name="SRT").click()
    download = info.value
    assert download.suggested_filename == f"{jfk.stem}.srt"
    body = Path(download.path()).read_text()
    assert body.startswith("1\n00:00:00,000 --> ") and "country" in body.lower()
    page.get_by_role("button", name="Copy text").click()
    expect(page.locator("#notice")).to_have_text("Transcript copied.")
    assert "country" in page.evaluate("() => navigator.clipboard.readText()").lower()
    tab.shot("exported")


def test_a_hostile_file_name_is_shown_as_text(tab: Tab, web: Daemon, jfk: Path, tmp_path: Path) -> None:
    """A file named like an HTML tag is listed as that text: no element is made from it, no script runs."""
    name = "<img src=x onerror=alert(1)>.wav"
    wav = tmp_path / "hostile.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x10" * 16000)
    page = tab.open(web)
    ready(page)
    upload(page, {"name": name, "mimeType": "audio/wav", "buffer": wav.read_bytes()})
    jobs = page.get_by_role("region", name="Jobs", exact=True)
    expect(jobs.get_by_role("button", name=name, exact=True)).to_be_visible()
    expect(page.locator("#transcript-meta")).to_contain_text(name)
    assert page.locator("img").count() == 0
    page.wait_for_timeout(500)
    assert tab.dialogs == [] and tab.csp_violations() == []
    tab.shot("hostile-name")


def test_with_keys_on_the_page_asks_for_a_key_and_works_with_it(
    tab: Tab, make_daemon: Callable[..., Daemon], database: str, jfk: Path
) -> None:
    """With ASR_AUTH=on the page asks for a key, then lists, uploads and transcribes with it; the key is
    sent only in the Authorization header (in no URL) and kept nowhere unless asked."""
    token = create_key(database, "browser")
    d = make_daemon(ASR_AUTH="on")
    page = tab.open(d)
    dialog = page.get_by_role("dialog", name="API key")
    expect(dialog).to_be_visible()
    tab.shot("asks-key")
    dialog.get_by_label("Key", exact=True).fill(token)
    dialog.get_by_role("button", name="Use key").click()
    ready(page)
    upload(page, jfk)
    expect(page.get_by_role("region", name="Transcript", exact=True)).to_contain_text("country", timeout=TIMEOUT_MS)
    expect(page.locator("#player")).to_have_attribute("src", re.compile("^blob:"))
    tab.shot("with-key")
    assert not any(token in url for url in tab.urls)
    assert page.evaluate("() => sessionStorage.length") == 0 and page.evaluate("() => localStorage.length") == 0


def test_a_failed_job_shows_its_message(
    tab: Tab, make_daemon: Callable[..., Daemon], jfk: Path, two_minutes: Path
) -> None:
    """A job that fails (its audio vanished while it waited) shows the server's message in Jobs and in
    the Transcript region, live."""
    d = make_daemon()
    with d.client() as c:
        busy = submit(c, two_minutes).json()["id"]
        wait_status(c, busy, {"running"})
        page = tab.open(d)
        ready(page)
        upload(page, jfk)
        row = page.locator("li.job").filter(has_text=jfk.name)
        expect(row.locator(".status")).to_have_text("queued")
        job_id = row.get_attribute("data-id")
        sha = c.get(f"/v1/jobs/{job_id}").json()["audio"]["sha256"]
        (d.state_dir / "uploads" / sha).unlink()
        c.delete(f"/v1/jobs/{busy}")
        expect(row.locator(".status")).to_have_text("failed", timeout=60_000)
    expect(row).to_contain_text("the uploaded audio is no longer on disk")
    expect(page.get_by_role("region", name="Transcript", exact=True).get_by_role("alert")).to_contain_text(
        "no longer on disk", timeout=10_000
    )
    tab.shot("failed")


def test_deleting_a_job_asks_first_and_removes_it(tab: Tab, web: Daemon, speech: Callable[..., Path]) -> None:
    """Delete asks for confirmation: Keep leaves the job; Delete removes it from the list and the server."""
    clip = speech("Please delete this short recording.")
    with web.client() as c:
        job = wait_status(c, submit(c, clip).json()["id"], {"completed"})
    page = tab.open(web)
    ready(page)
    row = page.locator(f'li.job[data-id="{job["id"]}"]')
    row.get_by_role("button", name=re.compile("^Delete")).click()
    confirm = page.get_by_role("dialog", name="Delete job?")
    expect(confirm).to_be_visible()
    tab.shot("confirm")
    confirm.get_by_role("button", name="Keep").click()
    expect(row).to_be_visible()
    row.get_by_role("button", name=re.compile("^Delete")).click()
    confirm.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    with web.client() as c:
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_phone_width_and_keyboard(browser: Browser, web: Daemon, jfk: Path) -> None:
    """At a phone's width nothing scrolls sideways; the controls are reached with Tab and a job opens with Enter."""
    with web.client() as c:
        wait_status(c, submit(c, jfk).json()["id"], {"completed"})
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        t = Tab(context, "phone")
        page = t.open(web)
        ready(page)
        assert page.evaluate("() => document.scrollingElement.scrollWidth <= window.innerWidth")
        t.shot("phone")
        focused = []
        for _ in range(24):  # the controls before the first job: file, options, record, live, search, ...
            page.keyboard.press("Tab")
            focused.append(page.evaluate("() => document.activeElement.id || document.activeElement.className"))
        assert "search" in focused and "file" in focused and "job-open" in focused, focused
        # other tests' jobs may be listed first: Tab on to this one's (the name is the file's)
        for _ in range(60):
            if (
                page.evaluate("() => document.activeElement.className") == "job-open"
                and page.evaluate("() => document.activeElement.textContent") == jfk.name
            ):
                break
            page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        expect(page.get_by_role("region", name="Transcript", exact=True)).to_contain_text("country", timeout=30_000)
        t.shot("phone-transcript")
    finally:
        context.close()


@contextlib.contextmanager
def other_origin() -> Iterator[str]:
    """An empty page served from another port (another origin than the daemon's)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", services.free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


FETCH = """async ([url, key]) => {
  try {
    const r = await fetch(url, {headers: {Authorization: `Bearer ${key}`}});
    return {status: r.status, jobId: r.headers.get('X-Job-Id'), body: await r.json()};
  } catch (e) { return {error: String(e)}; }
}"""


def test_a_page_on_an_allowed_origin_calls_the_api_across_origins(
    tab: Tab, make_daemon: Callable[..., Daemon], database: str, jfk: Path
) -> None:
    """A page on another port calls the API (preflight for the Authorization header, then the GET) when
    its origin is in ASR_CORS_ORIGINS; the same call from a page on an origin not listed is blocked."""
    token = create_key(database, "cors")
    with other_origin() as allowed, other_origin() as denied:
        d = make_daemon(ASR_AUTH="on", ASR_CORS_ORIGINS=allowed)
        with httpx.Client(base_url=d.url, headers=bearer(token), timeout=120) as c:
            wait_status(c, submit(c, jfk).json()["id"], {"completed"})
        page = tab.page
        page.goto(allowed + "/")
        ok = page.evaluate(FETCH, [f"{d.url}/v1/search?q=country", token])
        assert ok.get("status") == 200, ok
        assert ok["body"]["data"][0]["text"].lower().count("country") >= 1
        page.goto(denied + "/")
        blocked = page.evaluate(FETCH, [f"{d.url}/v1/search?q=country", token])
        assert "error" in blocked and "Failed to fetch" in blocked["error"], blocked


def test_word_timestamps_make_each_word_seek(tab: Tab, web: Daemon, story: Path) -> None:
    """With "word timestamps" ticked, each word is its own target: clicking one plays from that word,
    and the word being played is marked."""
    page = tab.open(web)
    ready(page)
    page.get_by_label("word timestamps").check()
    page.get_by_label("Language").select_option("en")  # other options than the default's: a new job
    upload(page, story)
    transcript = page.get_by_role("region", name="Transcript", exact=True)
    word = transcript.locator(".word").filter(has_text=re.compile("breakfast", re.IGNORECASE)).first
    expect(word).to_be_visible(timeout=TIMEOUT_MS)
    with web.client() as c:
        job_id = page.locator("li.job.selected").get_attribute("data-id")
        words = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["words"]
    start = next(w["start"] for w in words if "breakfast" in w["word"].lower())
    word.click()
    page.wait_for_function("() => !document.getElementById('player').paused", timeout=15_000)
    t = page.evaluate("() => document.getElementById('player').currentTime")
    assert start - 0.1 <= t <= start + 1.5, (t, start)
    page.wait_for_function("() => document.querySelector('.word.now') !== null", timeout=5_000)
    tab.shot("words")


def test_a_microphone_recording_becomes_a_job(tab: Tab, web: Daemon) -> None:
    """Record (chromium's fake microphone), Stop: the recording is uploaded as a WebM job that completes
    and whose audio is served back as audio/webm."""
    tab.context.grant_permissions(["microphone"], origin=web.url)
    page = tab.open(web)
    ready(page)
    record = page.get_by_role("button", name="Record")
    record.click()
    stop = page.get_by_role("button", name="Stop recording")
    expect(stop).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#record-status")).to_contain_text("recording", timeout=10_000)
    page.wait_for_timeout(2500)
    tab.shot("recording")
    stop.click()
    row = page.locator("li.job").filter(has_text=re.compile(r"recording-.*\.webm"))
    expect(row.locator(".status")).to_have_text("completed", timeout=TIMEOUT_MS)
    job_id = row.get_attribute("data-id")
    with web.client() as c:
        audio = c.get(f"/v1/jobs/{job_id}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/webm"
    assert tab.csp_violations() == []


def test_jobs_submitted_elsewhere_appear_without_a_reload(tab: Tab, web: Daemon, speech: Callable[..., Path]) -> None:
    """A job another client submits shows up at the top of Jobs on its own and is followed to completion."""
    page = tab.open(web)
    ready(page)
    clip = speech("Another client sent this one.")
    with web.client() as c:
        job_id = submit(c, clip).json()["id"]
    row = page.locator(f'li.job[data-id="{job_id}"]')
    expect(row).to_be_visible(timeout=15_000)
    expect(page.locator("li.job").first).to_have_attribute("data-id", job_id)
    expect(row.locator(".status")).to_have_text("completed", timeout=TIMEOUT_MS)


def test_a_link_opens_a_job_at_a_second(tab: Tab, web: Daemon, story: Path) -> None:
    """`/#job=<id>&t=<s>` (what the address bar shows after opening a search hit) opens that job with the
    player at that second, that segment highlighted."""
    with web.client() as c:
        job = wait_status(c, submit(c, story).json()["id"], {"completed"})
    page = tab.page
    page.goto(f"{web.url}/#job={job['id']}&t=9")
    ready(page)
    expect(page.get_by_role("region", name="Transcript", exact=True)).to_contain_text("breakfast", timeout=30_000)
    page.wait_for_function("() => Math.abs(document.getElementById('player').currentTime - 9) < 0.5")
    expect(page.locator("li.seg.current")).to_have_count(1)
    assert page.evaluate("() => location.hash") == f"#job={job['id']}&t=9"
