"""schemathesis against the served OpenAPI schema of the real daemon: no 5xx, responses match the schema."""

from __future__ import annotations

import os
import signal
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from tests.conftest import Daemon, leftover_files

EXAMPLES = int(os.environ.get("ASR_TEST_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def fuzz_daemon(make_module_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    """One daemon for every fuzzed operation (small upload limit: fuzzed bodies are never audio anyway)."""
    d = make_module_daemon(ASR_MAX_UPLOAD_BYTES=str(1 << 20), ASR_UPLOAD_IDLE_TIMEOUT="2", ASR_SYNC_TIMEOUT="5")
    yield d
    d.stop(signal.SIGKILL, timeout=10)
    assert not leftover_files(d.state_dir)
    assert '"request_failed"' not in d.logs(), d.logs()[-3000:]


def _app_schema() -> dict[str, Any]:
    """The OpenAPI document the app builds (the test below checks the daemon serves exactly this)."""
    from asr_daemon.api.app import create_app
    from asr_daemon.config import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Litestar's notes on path-parameter style
        doc: dict[str, Any] = create_app(Settings()).openapi_schema.to_schema()
    return doc


SCHEMA = _app_schema()
schema = schemathesis.openapi.from_dict(SCHEMA)


def test_served_schema_is_the_fuzzed_one(fuzz_daemon: Daemon) -> None:
    """What /docs/openapi.json serves is the document the fuzzer below works from."""
    with fuzz_daemon.client() as c:
        assert c.get("/docs/openapi.json").json() == SCHEMA


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_conforms_to_its_schema_under_fuzzing(case: Any, fuzz_daemon: Daemon) -> None:
    """Generated requests to every operation: never a 5xx, and status, headers and bodies match the schema."""
    excluded = [allow_header_conformance]  # Litestar's automatic OPTIONS lists one handler's methods only
    if case.operation.method.upper() == "POST" or case.operation.path in ("/v1/jobs", "/v1/search"):
        # a schema cannot say "decodable audio" or "a cursor this server minted": schema-valid random
        # bytes in `file` and random cursors rightly get 415/400
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=fuzz_daemon.url, timeout=30, excluded_checks=excluded)


def test_real_responses_match_their_documented_shapes(fuzz_daemon: Daemon, jfk: Path) -> None:
    """A real job, its list, its json and verbose_json transcripts (with words), the models and an error
    each validate against the schema the OpenAPI document gives their status and media type; so do a
    search hit, the job's audio (whole and a range) and its deletion."""
    with fuzz_daemon.client(timeout=60) as c:

        def check(method: str, path: str, response: httpx.Response) -> httpx.Response:
            response.request.read()  # schemathesis records the request body beside the answer
            schema[path][method].validate_response(response)  # raises with the mismatch
            return response

        r = check("POST", "/v1/jobs", c.post("/v1/jobs", files={"file": jfk.open("rb")}, data={"temperature": "0.2"}))
        jid = r.json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{jid}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        check("GET", "/v1/jobs/{job_id}", c.get(f"/v1/jobs/{jid}"))
        check("GET", "/v1/jobs", c.get("/v1/jobs", params={"limit": "1"}))
        for fmt in ("json", "verbose_json", "srt"):
            r = check(
                "GET", "/v1/jobs/{job_id}/transcript", c.get(f"/v1/jobs/{jid}/transcript", params={"format": fmt})
            )
            assert r.status_code == 200 and "country" in r.text.lower()
        r = c.post(
            "/v1/audio/transcriptions",
            files={"file": jfk.open("rb")},
            data={"response_format": "verbose_json", "timestamp_granularities[]": "word"},
        )
        assert check("POST", "/v1/audio/transcriptions", r).json()["words"], r.text
        check("GET", "/v1/models", c.get("/v1/models"))
        hits = check("GET", "/v1/search", c.get("/v1/search", params={"q": "country"})).json()["data"]
        assert hits and hits[0]["matches"]
        for headers in ({}, {"Range": "bytes=0-9"}):
            check("GET", "/v1/jobs/{job_id}/audio", c.get(f"/v1/jobs/{jid}/audio", headers=headers))
        assert check("POST", "/v1/jobs/{job_id}/delete", c.post(f"/v1/jobs/{jid}/delete")).json()["deleted"]
        r = check("GET", "/v1/jobs/{job_id}", c.get(f"/v1/jobs/{uuid.uuid4()}"))
        assert r.status_code == 404 and set(r.json()["error"]) >= {"message", "type", "code"}
