"""The official `openai` SDK against the real daemon: its retries (it retries on timeouts, 409, 429 and 5xx
unless told `x-should-retry: false`) never run the model twice nor undo a cancel; streams stay alive and end
with an error the SDK raises. An API-only daemon (ASR_RUN_WORKER=false) keeps every job queued on purpose."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest
from openai import OpenAI

from tests import services
from tests.conftest import Daemon


@pytest.fixture(scope="module")
def api_only(make_module_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon without a worker (jobs stay queued), answering sync requests 504 after 4 s."""
    return make_module_daemon(ASR_RUN_WORKER="false", ASR_SYNC_TIMEOUT="4")


def sdk(d: Daemon, sent: list[str], **options: object) -> OpenAI:
    """The official client on `d`, noting each HTTP request it sends in `sent`."""
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    return OpenAI(base_url=d.url + "/v1", api_key="x", http_client=http, **options)  # type: ignore[arg-type]


def rows(d: Daemon, prompt: str) -> list[tuple[str, str]]:
    """(id, status) of the jobs submitted with this prompt, oldest first."""

    async def q() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(d.env["ASR_DATABASE_URL"])
        try:
            got = await conn.fetch(
                "SELECT id::text, status FROM jobs WHERE options->>'prompt' = $1 ORDER BY created_at", prompt
            )
        finally:
            await conn.close()
        return [(r["id"], r["status"]) for r in got]

    return asyncio.run(q())


def first_job(d: Daemon, prompt: str, timeout: float = 20) -> str:
    """The id of the job with this prompt, once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := rows(d, prompt):
            return found[0][0]
        time.sleep(0.05)
    raise AssertionError(f"no job with prompt {prompt!r}")


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], object]], dict[str, object]]]:
    """Run a call in a thread; its result or exception lands in the returned dict under 'out'."""
    threads: list[threading.Thread] = []

    def start(call: Callable[[], object]) -> dict[str, object]:
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["out"] = call()
            except Exception as exc:  # noqa: BLE001  # the test inspects what the SDK raised
                box["out"] = exc

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return box

    yield start
    for t in threads:
        t.join(60)


def test_sdk_retries_after_its_timeout_join_the_job_instead_of_making_new_ones(api_only: Daemon, jfk: Path) -> None:
    """The SDK times out and resubmits twice (as with its 600 s default against a longer job): one job."""
    sent: list[str] = []
    client = sdk(api_only, sent, timeout=1.0, max_retries=2)
    with pytest.raises(openai.APITimeoutError):
        client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), prompt="sdk-timeout")
    assert len(sent) == 3, sent
    assert [s for _, s in rows(api_only, "sdk-timeout")] == ["queued"]


def test_a_504_still_running_is_not_retried_and_says_where_to_follow(api_only: Daemon, jfk: Path) -> None:
    """ASR_SYNC_TIMEOUT passes: one 504 with the job id, Location and x-should-retry: false, one request."""
    sent: list[str] = []
    client = sdk(api_only, sent, timeout=30)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), prompt="sdk-504")
    r = caught.value.response
    job_id = first_job(api_only, "sdk-504")
    assert (r.status_code, r.headers["x-should-retry"], r.headers["location"]) == (504, "false", f"/v1/jobs/{job_id}")
    assert r.json()["error"]["job_id"] == job_id
    assert len(sent) == 1, sent


def test_an_operators_cancel_is_not_undone_by_the_sdks_retry(
    api_only: Daemon, jfk: Path, background: Callable[[Callable[[], object]], dict[str, object]]
) -> None:
    """A sync job cancelled while the SDK waits: the SDK raises 409 (no retry), no new job is made."""
    sent: list[str] = []
    client = sdk(api_only, sent, timeout=30)
    box = background(lambda: client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), prompt="sdk-c"))
    job_id = first_job(api_only, "sdk-c")
    assert httpx.delete(f"{api_only.url}/v1/jobs/{job_id}").json()["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while "out" not in box and time.monotonic() < deadline:
        time.sleep(0.05)
    err = box.get("out")
    assert isinstance(err, openai.ConflictError), err
    assert err.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1, sent
    assert rows(api_only, "sdk-c") == [(job_id, "cancelled")]


def test_a_cancelled_stream_raises_in_the_sdk(api_only: Daemon, jfk: Path) -> None:
    """stream=true of a job then cancelled: the last event carries `error`, so iterating raises."""
    client = OpenAI(base_url=api_only.url + "/v1", api_key="x", max_retries=0, timeout=30)
    events = client.audio.transcriptions.create(
        model="whisper-1", file=jfk.open("rb"), prompt="sdk-stream-c", stream=True
    )
    job_id = events.response.headers["x-job-id"]
    assert httpx.delete(f"{api_only.url}/v1/jobs/{job_id}").status_code == 200
    with pytest.raises(openai.APIError, match="cancelled"):
        for _ in events:
            pass


@pytest.mark.slow
def test_a_queued_stream_sends_keep_alives(api_only: Daemon, jfk: Path) -> None:
    """stream=true while the job waits in the queue: a keep-alive comment within 20 s, like /events."""
    with (
        httpx.Client(base_url=api_only.url, timeout=httpx.Timeout(22, connect=5)) as c,
        c.stream(
            "POST",
            "/v1/audio/transcriptions",
            files={"file": jfk.open("rb")},
            data={"stream": "true", "prompt": "sdk-keepalive"},
        ) as r,
    ):
        assert r.status_code == 200
        started = time.monotonic()
        for line in r.iter_lines():
            if line.startswith(":"):
                assert line == ": keep-alive" and time.monotonic() - started < 20
                break
            assert not line.strip(), line  # nothing else while queued


@pytest.mark.slow
def test_a_database_outage_after_acceptance_answers_503_with_the_job(
    make_daemon: Callable[..., Daemon],
    pg: services.Postgres,
    jfk: Path,
    background: Callable[[Callable[[], object]], dict[str, object]],
) -> None:
    """PostgreSQL stops while a sync request waits for its stored job: 503 naming the job (not 'nothing was
    stored'), Location and x-should-retry: false, so the SDK does not send the audio again."""
    d = make_daemon(ASR_RUN_WORKER="false", ASR_SYNC_TIMEOUT="5")
    sent: list[str] = []
    client = sdk(d, sent, timeout=60)
    box = background(lambda: client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), prompt="pg"))
    job_id = first_job(d, "pg")
    pg.stop()
    try:
        deadline = time.monotonic() + 40
        while "out" not in box and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        pg.start()
    err = box.get("out")
    assert isinstance(err, openai.APIStatusError), err
    r = err.response
    assert (r.status_code, r.headers["x-should-retry"], r.headers["location"]) == (503, "false", f"/v1/jobs/{job_id}")
    body = r.json()["error"]
    assert body["job_id"] == job_id and "nothing was stored" not in body["message"], body
    assert len(sent) == 1, sent
    assert rows(d, "pg") == [(job_id, "queued")]


@pytest.mark.slow
def test_sdk_retries_while_the_model_runs_join_the_running_job(
    make_daemon: Callable[..., Daemon], two_minutes: Path
) -> None:
    """The reviewer's case with a worker: the SDK gives up on a running job and resubmits; the model runs once."""
    d = make_daemon()
    sent: list[str] = []
    client = sdk(d, sent, timeout=1.5, max_retries=2)
    with pytest.raises(openai.APITimeoutError):
        client.audio.transcriptions.create(model="whisper-1", file=two_minutes.open("rb"), prompt="sdk-running")
    assert len(sent) == 3, sent
    deadline = time.monotonic() + 180
    while rows(d, "sdk-running")[0][1] != "completed":
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.2)
    assert len(rows(d, "sdk-running")) == 1
    logs = d.logs()
    assert logs.count('"job_started"') == 1 and logs.count('"job_deduplicated"') == 2
    joined = [line for line in logs.splitlines() if '"job_deduplicated"' in line]
    assert any('"running"' in line for line in joined), joined  # a retry joined the job while the model ran
