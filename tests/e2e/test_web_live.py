"""The page's Live mode in real chromium: a fake microphone fed from an espeak-ng WAV, through the
page's AudioWorklet (24 kHz PCM16) and WebSocket to the real daemon's `/v1/realtime`; the text shows
while the file plays, and the session is kept as a job that opens like any transcript."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, WebSocket, expect, sync_playwright

from tests.conftest import CACHE, STORY, Daemon
from tests.e2e.test_keys import bearer, create_key
from tests.e2e.test_web_browser import CHROMIUM, TIMEOUT_MS, Tab, ready

pytestmark = pytest.mark.slow

#: About 15 s of speech with short pauses only (one utterance for server VAD: several partial decodes
#: fit in it even on a busy machine, where the server spaces them out).
SENTENCE = " ".join(STORY[:2])

#: The first sentence as tiny.en hears espeak through the fake microphone: a word or phrase of it, as
#: its words are misheard at times ("brown fox" → "brown box", "lazy dog" → "rainy dog": the dither differs)
FIRST = re.compile(r"\b(quick|brown|fox|jumps|lazy dog|over the)\b", re.IGNORECASE)

#: Before the page clicks Live: every text a line of the live transcript showed before it was final.
WATCH = """() => {
  window.__partials = [];
  const list = document.getElementById('live-lines');
  new MutationObserver(() => {
    for (const li of list.querySelectorAll('li.live-line:not(.done)')) {
      const text = li.textContent.trim();
      if (text) window.__partials.push(text);
    }
  }).observe(list, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def microphone_wav() -> Path:
    """The sentence as chromium's fake microphone plays it: 48 kHz mono 16-bit WAV, 1 s of silence
    before and 3 s after (so server VAD hears the speech end)."""
    out = CACHE / "speech" / "live-page-48k-2.wav"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        raw = out.with_suffix(".raw.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), SENTENCE], check=True)
        tmp = out.with_suffix(".tmp.wav")
        subprocess.run(
            ["sox", "-R", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(tmp), "pad", "1", "3"], check=True
        )
        raw.unlink()
        tmp.replace(out)
    return out


@pytest.fixture
def mic_browser(microphone_wav: Path) -> Iterator[Browser]:
    """chromium whose microphone plays the WAV once (`%noloop`), allowed without asking."""
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--autoplay-policy=no-user-gesture-required",
                "--mute-audio",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def live_daemon(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon without keys, its model loaded before it is ready (no load while the microphone plays)."""
    return make_module_daemon(ASR_PRELOAD="true")


class MicTab(Tab):
    """A tab that also records its WebSocket addresses (with the requests') and the server events' types."""

    def __init__(self, context: BrowserContext, name: str) -> None:
        super().__init__(context, name)
        self.events: list[str] = []
        self.finals: list[str] = []  # the `completed` transcripts, in order
        self.page.on("websocket", self._socket)

    def _socket(self, ws: WebSocket) -> None:
        self.urls.append(ws.url)
        ws.on("framereceived", self._received)

    def _received(self, frame: str | bytes) -> None:
        ev = json.loads(frame)
        self.events.append(str(ev.get("type")))
        if ev.get("type") == "conversation.item.input_audio_transcription.completed":
            self.finals.append(str(ev.get("transcript")))


@pytest.fixture
def tab(mic_browser: Browser, request: pytest.FixtureRequest) -> Iterator[MicTab]:
    """A fresh context in the microphone browser, with one page."""
    context = mic_browser.new_context(viewport={"width": 1280, "height": 860})
    yield MicTab(context, request.node.name.removeprefix("test_")[:60])
    context.close()


def words(text: str) -> str:
    """Lower case, punctuation dropped."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def live_session(tab: MicTab, page: Page) -> str:
    """Click Live, wait for the speech's end to be final on the page, Stop; the job's id."""
    page.evaluate(WATCH)
    page.get_by_role("button", name="Live").click()
    stop = page.get_by_role("button", name="Stop live")
    expect(stop).to_have_attribute("aria-pressed", "true", timeout=30_000)
    log = page.get_by_role("log", name="Live transcript")
    with contextlib.suppress(AssertionError):  # a picture of text not final yet (its check is the test's)
        expect(log.locator("li:not(.done)").filter(has_text=re.compile(r"\w")).first).to_be_visible(timeout=20_000)
    tab.shot("live-speaking")
    expect(log).to_contain_text(FIRST, timeout=TIMEOUT_MS)
    expect(log.locator("li.done").last).to_contain_text("breakfast", ignore_case=True, timeout=TIMEOUT_MS)
    tab.shot("live-final")
    stop.click()
    expect(page.locator("#live-status")).to_have_text("Saved as a job.", timeout=60_000)
    row = page.locator("li.job").filter(has_text="live session")
    expect(row).to_have_count(1)
    expect(row.locator(".status")).to_have_text("completed", timeout=TIMEOUT_MS)
    job_id = row.get_attribute("data-id")
    assert job_id
    transcript = page.get_by_role("region", name="Transcript", exact=True)
    expect(transcript).to_contain_text("thousand miles", ignore_case=True, timeout=60_000)
    expect(transcript.locator(".export")).to_be_visible()
    tab.shot("live-job")
    return job_id


def test_live_mode_shows_the_words_as_they_are_spoken_and_keeps_the_job(tab: MicTab, live_daemon: Daemon) -> None:
    """Live: chromium's microphone goes out as 24 kHz PCM in real time; each `delta` shows in the live
    region before its utterance is final, the final text replaces it, all while the session is open;
    after Stop the session is a completed job of kind live in Jobs whose transcript opens, with no CSP
    refusal. (On a quiet machine deltas come while the person speaks; on a busy one the server may send
    an utterance's text as one delta just before `completed` — the page's path is the same.)"""
    d = live_daemon
    page = tab.open(d)
    ready(page)
    job_id = live_session(tab, page)
    partials = page.evaluate("() => window.__partials")
    deltas = [e for e in tab.events if e.endswith(".delta")]
    assert deltas and any(FIRST.search(p) for p in partials), (partials, tab.events)
    with d.client() as c:
        job = c.get(f"/v1/jobs/{job_id}").json()
        text = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"}).text
    assert job["kind"] == "live" and job["status"] == "completed", job
    assert FIRST.search(words(text)) and "breakfast" in words(text), text
    assert words(text) == words(" ".join(tab.finals)), (text, tab.finals)  # stored as the page was told
    # the speech ends 14.4 s into the 17.4 s microphone file; the last final comes ~0.2 s later and the
    # test stops then, so the stored audio holds all the speech but not necessarily the trailing silence
    assert 14 < job["audio"]["duration_s"] < 40, job["audio"]
    assert tab.csp_violations() == [] and tab.dialogs == []


def test_live_mode_with_keys_uses_a_client_secret(
    tab: MicTab, make_daemon: Callable[..., Daemon], database: str
) -> None:
    """With ASR_AUTH=on the page makes a client secret with its key and opens the socket with it: the
    text comes, the job is the key's, and neither the key nor the secret is in any URL."""
    token = create_key(database, "live-page")
    d = make_daemon(ASR_AUTH="on", ASR_PRELOAD="true")
    secrets: list[str] = []
    tab.page.on(
        "response",
        lambda r: secrets.append(r.json()["value"]) if r.url.endswith("/v1/realtime/client_secrets") and r.ok else None,
    )
    page = tab.open(d)
    dialog = page.get_by_role("dialog", name="API key")
    dialog.get_by_label("Key", exact=True).fill(token)
    dialog.get_by_role("button", name="Use key").click()
    ready(page)
    job_id = live_session(tab, page)
    assert secrets and all(s.startswith("ek_") for s in secrets)
    sockets = [u for u in tab.urls if u.startswith("ws")]
    assert sockets and all(u.endswith("/v1/realtime?intent=transcription") for u in sockets), sockets
    assert not any(token in u or any(s in u for s in secrets) for u in tab.urls)
    with d.client() as c:
        assert c.get(f"/v1/jobs/{job_id}", headers=bearer(token)).json()["kind"] == "live"
        assert c.get(f"/v1/jobs/{job_id}").status_code == 401


def test_a_refused_live_session_says_why_and_leaves_no_job(tab: MicTab, make_daemon: Callable[..., Daemon]) -> None:
    """When the server refuses live sessions (ASR_LIVE_MAX_SESSIONS=0) the page shows its reason, the
    button is Live again (usable), the microphone is released, and no job was made."""
    d = make_daemon(ASR_LIVE_MAX_SESSIONS="0")
    page = tab.open(d)
    ready(page)
    page.get_by_role("button", name="Live").click()
    expect(page.locator("#notice")).to_contain_text("turned off", timeout=30_000)
    live = page.get_by_role("button", name="Live", exact=True)
    expect(live).to_be_enabled()
    expect(live).to_have_attribute("aria-pressed", "false")
    expect(page.get_by_role("button", name="Record")).to_be_enabled()
    expect(page.locator("#live-panel")).to_be_hidden()
    assert "error" in tab.events
    tab.shot("live-refused")
    with d.client() as c:
        assert c.get("/v1/jobs").json()["data"] == []
    assert tab.csp_violations() == []


RESAMPLE = """async ([rate, hz]) => {
  const ctx = new OfflineAudioContext(1, rate, rate);  // one second
  await ctx.audioWorklet.addModule('/static/js/pcm-worklet.js');
  const node = new AudioWorkletNode(ctx, 'pcm24k', {numberOfInputs: 1, numberOfOutputs: 0});
  const chunks = [];
  let stopped;
  const done = new Promise((resolve) => (stopped = resolve));
  node.port.onmessage = (m) => (m.data instanceof ArrayBuffer ? chunks.push(m.data.byteLength / 2) : stopped());
  const samples = [];
  const keep = (m) => m.data instanceof ArrayBuffer && samples.push(...new Int16Array(m.data));
  node.port.addEventListener('message', keep);
  const osc = new OscillatorNode(ctx, {frequency: hz});
  osc.connect(node);
  osc.start();
  await ctx.startRendering();
  node.port.postMessage('stop');
  await done;
  let crossings = 0;
  for (let i = 1; i < samples.length; i++) if ((samples[i - 1] < 0) !== (samples[i] < 0)) crossings++;
  return {chunks, total: samples.length, crossings, peak: Math.max(...samples.map(Math.abs))};
}"""


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_the_worklet_makes_24_khz_pcm16_from_any_rate(tab: MicTab, live_daemon: Daemon, rate: int) -> None:
    """pcm-worklet.js turns one second of a 440 Hz tone at 48, 44.1 or 16 kHz into one second at 24 kHz
    of PCM16 in 100 ms chunks (2,400 samples; the rest on stop), still 440 Hz and near full scale."""
    page = tab.open(live_daemon)
    ready(page)
    out = page.evaluate(RESAMPLE, [rate, 440])
    rendered = -(-rate // 128) * 128  # whole render quanta of 128 frames (44,100 → 44,160)
    assert abs(out["total"] - rendered * 24000 / rate) <= 1, out["total"]
    assert all(n == 2400 for n in out["chunks"][:-1]) and 0 < out["chunks"][-1] <= 2400, out["chunks"]
    assert abs(out["crossings"] - 880) <= 4, out["crossings"]
    assert 0.95 * 32767 <= out["peak"] <= 32767, out["peak"]
