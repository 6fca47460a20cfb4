"""Speakers on the page in real chromium: the upload's "Speakers" option (diarize=true), each segment's
speaker in the transcript view, and renaming a speaker there (PATCH /v1/jobs/{id}/speakers)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from bench import dialogue as dialogue_clip
from tests.conftest import CACHE, Daemon
from tests.e2e import test_web_browser as web_page
from tests.e2e.test_web_browser import TIMEOUT_MS, Tab, ready, upload

browser = web_page.browser  # the page tests' chromium and tab fixtures, shared by name
tab = web_page.tab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dialogue() -> Path:
    """Six alternating lines by two espeak-ng voices (bench/dialogue.py, as the diarization tests use)."""
    return dialogue_clip.dialogue(CACHE / "speech")[0]


def test_speakers_are_shown_and_renamed_everywhere_in_the_view(
    tab: Tab,
    make_module_daemon: Callable[..., Daemon],
    diarization_models: Path,
    dialogue: Path,
) -> None:
    """With "Speakers" ticked (2 speakers) a two-voice dialogue's segments show A and B; renaming A to
    Alice (from a segment) shows Alice on every A segment and in the speakers bar at once, is stored,
    and a name that looks like HTML is shown as text."""
    d = make_module_daemon()
    page = tab.open(d)
    ready(page)
    page.get_by_label("Speakers", exact=True).check()
    page.get_by_label("Number of speakers").fill("2")
    upload(page, dialogue)
    transcript = page.get_by_role("region", name="Transcript", exact=True)
    expect(transcript.locator(".export")).to_be_visible(timeout=TIMEOUT_MS)
    chips = transcript.locator("#segments button.speaker")
    expect(chips.first).to_have_text("A", timeout=30_000)
    labels = chips.all_inner_texts()
    assert set(labels) == {"A", "B"} and labels.count("A") >= 2, labels
    bar = transcript.locator("#speakers")
    expect(bar.get_by_role("button")).to_have_text(["A", "B"])
    tab.shot("speakers")
    job_id = page.locator("li.job.selected").get_attribute("data-id")
    with d.client() as c:
        job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["speakers"]["num_speakers"] == 2, job["speakers"]

    chips.first.click()
    dialog = page.get_by_role("dialog", name="Rename speaker")
    expect(dialog).to_be_visible()
    expect(page.locator("#player")).to_have_js_property("paused", True)  # the click renamed; it did not seek
    dialog.get_by_label("Name").fill("Alice")
    tab.shot("rename")
    dialog.get_by_role("button", name="Save").click()
    expect(chips.filter(has_text=re.compile("^Alice$"))).to_have_count(labels.count("A"))
    expect(chips.filter(has_text=re.compile("^A$"))).to_have_count(0)
    expect(bar.get_by_role("button")).to_have_text(["Alice", "B"])
    bar.get_by_role("button", name="Rename speaker B").click()
    dialog.get_by_label("Name").fill("<b>Bob</b>")
    dialog.get_by_role("button", name="Save").click()
    expect(chips.filter(has_text="<b>Bob</b>")).to_have_count(labels.count("B"))
    assert transcript.locator("b").count() == 0
    tab.shot("renamed")
    with d.client() as c:
        segments = c.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["segments"]
    assert {s["speaker"] for s in segments} == {"Alice", "<b>Bob</b>"}

    page.reload()
    ready(page)
    page.locator(f'li.job[data-id="{job_id}"] .job-open').click()
    expect(chips.first).to_have_text("Alice", timeout=30_000)
    assert tab.csp_violations() == [] and tab.dialogs == []
