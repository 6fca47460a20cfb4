"""`asrctl transcribe FILE...`: a client of the daemon's job API, with a live progress bar.

Submits every file (`POST /v1/jobs`), then follows each job's server-sent events
(`GET /v1/jobs/{id}/events`, resuming with Last-Event-ID when the stream drops) and fetches the
transcript (`GET /v1/jobs/{id}/transcript?format=...`). It talks to the public address
(ASR_URL, else http://ASR_HOST:ASR_PORT), so under systemd the first request starts the daemon.
`--async` prints the job ids and returns at once.

Transcripts go to stdout, or to `--output DIR/<file stem>.<ext>`; progress and errors go to stderr.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from asr_daemon import jobs, urls
from asr_daemon.cli import common
from asr_daemon.config import Settings

FORMATS = {"text": "txt", "srt": "srt", "vtt": "vtt", "json": "json", "verbose_json": "json", "diarized_json": "json"}
RECONNECTS = 5


class ApiError(Exception):
    """The daemon refused or failed a request; the message is one line."""


def base_url(s: Settings, url: str | None) -> str:
    """Where the API is: --url/ASR_URL, else the configured host and port (loopback for a wildcard)."""
    if url:
        return url.rstrip("/")
    return urls.daemon_url(s.host, s.port)


def _explain(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body["error"]["message"] if isinstance(body, dict) and "error" in body else body
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"HTTP {response.status_code}: {message}"


def submit(client: httpx.Client, path: Path, fields: dict[str, str]) -> str:
    """Upload one file as a job; returns the job id."""
    with path.open("rb") as fh:
        response = client.post("/v1/jobs", files={"file": (path.name, fh, "application/octet-stream")}, data=fields)
    if response.status_code not in (200, 202):
        raise ApiError(_explain(response))
    job_id: str = response.json()["id"]
    return job_id


def output_problem(output: Path, files: list[Path], ext: str) -> str | None:
    """Why transcripts cannot be written to `output/<stem>.<ext>`, checked before any job is submitted
    (nothing is created: the directory is made only once there is a transcript); None when they can."""
    if output.exists() and not output.is_dir():
        return f"--output {output}: not a directory"
    nearest = next(p for p in (output, *output.parents) if p.exists())
    if not nearest.is_dir():
        return f"--output {output}: {nearest} is not a directory"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"--output {output}: {nearest} is not writable"
    for path in files:
        if (output / f"{path.stem}.{ext}").is_dir():
            return f"--output {output}: {path.stem}.{ext} there is a directory"
    return None


def _refuse_bad_input(files: list[Path], fmt: str, output: Path | None) -> None:
    """One error line, before anything is submitted, for a bad format, a missing file or an output
    directory transcripts cannot be written to."""
    if fmt not in FORMATS:
        common.fail(f"--format must be one of {', '.join(FORMATS)}", code=2)
    for path in files:
        if not path.is_file():
            common.fail(f"{path}: no such file")
    problem = output_problem(output, files, FORMATS[fmt]) if output is not None else None
    if problem:
        common.fail(problem)


def events(client: httpx.Client, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, data) for each server-sent event of the job, reconnecting with Last-Event-ID."""
    last: str | None = None
    for attempt in range(RECONNECTS):
        if attempt:
            time.sleep(0.5 * attempt)
        headers = {"Last-Event-ID": last} if last else {}
        try:
            with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
                if response.status_code != 200:
                    response.read()
                    raise ApiError(_explain(response))
                kind, data, ev_id = "message", "", None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif line.startswith("id:"):
                        ev_id = line[3:].strip()
                    elif line == "" and data:
                        yield kind, json.loads(data)
                        last = ev_id or last
                        if kind in jobs.TERMINAL:
                            return
                        kind, data, ev_id = "message", "", None
        except httpx.TransportError:
            continue  # the daemon restarted or the stream dropped: resume after the last event
    raise ApiError(f"lost the event stream of job {job_id} {RECONNECTS} times")


def follow(client: httpx.Client, job_id: str, progress: Progress, name: str) -> dict[str, Any]:
    """Drive a progress bar from the job's events; returns the final event's data."""
    task = progress.add_task(name, total=None)
    for kind, data in events(client, job_id):
        if kind == "segment" and data.get("duration_s"):
            progress.update(task, total=data["duration_s"], completed=data.get("progress_s", 0))
        elif kind == "started":
            progress.update(task, description=f"{name} (running)")
        elif kind == "diarization":  # issue 19: the speaker step runs before the transcription
            done = data["status"] == "done"
            progress.update(task, description=f"{name} ({'transcribing' if done else 'finding speakers'})")
        elif kind in jobs.TERMINAL:
            total = progress.tasks[task].total or 1
            progress.update(
                task,
                total=total,
                completed=total if kind == jobs.Status.COMPLETED else 0,
                description=f"{name} ({kind})",
            )
            data["status"] = kind
            return data
    raise ApiError(f"job {job_id}: the event stream ended without a final event")


def transcript(client: httpx.Client, job_id: str, fmt: str) -> str:
    """The finished job's transcript in `fmt`."""
    response = client.get(f"/v1/jobs/{job_id}/transcript", params={"format": fmt})
    if response.status_code != 200:
        raise ApiError(_explain(response))
    return response.text


def follow_all(
    client: httpx.Client, submitted: list[tuple[Path, str]], fmt: str, output: Path | None, err: Console
) -> int:
    """Follow each job to its end and deliver its transcript; returns how many failed."""
    failed = 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=output is None) as progress:
        for path, job_id in submitted:
            try:
                final = follow(client, job_id, progress, path.name)
                if final["status"] != jobs.Status.COMPLETED:
                    reason = (final.get("error") or {}).get("message") or final["status"]
                    raise ApiError(f"job {job_id} {final['status']}: {reason}")
                text = transcript(client, job_id, fmt)
            except (ApiError, httpx.TransportError) as exc:
                failed += 1
                err.print(f"asrctl: error: {path}: {exc}", markup=False, highlight=False)
                continue
            if output is None:
                typer.echo(text.rstrip("\n"))
            else:
                target = output / f"{path.stem}.{FORMATS[fmt]}"
                try:
                    target.write_text(text)
                except OSError as exc:  # changed since the check before submitting
                    failed += 1
                    err.print(f"asrctl: error: {target}: {exc.strerror}", markup=False, highlight=False)
                    continue
                err.print(f"{path} -> {target}", markup=False, highlight=False)
    return failed


def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio or video files.")],
    model: Annotated[str | None, typer.Option(help="Model name (default: the daemon's ASR_MODEL).")] = None,
    language: Annotated[str | None, typer.Option(help="ISO-639-1 code; detected when omitted.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, srt, vtt, json, verbose_json or diarized_json.")] = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write DIR/<stem>.<ext>.")] = None,
    run_async: Annotated[bool, typer.Option("--async", help="Print job ids and return at once.")] = False,
    url: Annotated[str | None, typer.Option(envvar="ASR_URL", help="API base URL.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="ASR_API_KEY", help="API key, if the daemon needs one.")] = None,
    diarize: Annotated[bool, typer.Option("--diarize", help="Say who spoke (speaker labels in every format).")] = False,
    speakers: Annotated[int | None, typer.Option(help="With --diarize: how many speakers there are.")] = None,
) -> None:
    """Transcribe files through the daemon (starting it on demand), with live progress."""
    _refuse_bad_input(files, fmt, None if run_async else output)
    base = base_url(common.settings(), url)
    fields = {k: v for k, v in (("model", model), ("language", language)) if v}
    if diarize or speakers is not None or fmt == "diarized_json":
        fields["diarize"] = "true"
        if speakers is not None:
            fields["num_speakers"] = str(speakers)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx.Timeout(120.0, connect=30.0)
    failed = 0
    err = Console(stderr=True, soft_wrap=True)  # soft wrap: an error stays one line
    with httpx.Client(base_url=base, timeout=timeout, headers=headers) as client:
        submitted: list[tuple[Path, str]] = []
        for path in files:
            try:
                submitted.append((path, submit(client, path, fields)))
            except httpx.TransportError as exc:
                common.fail(f"cannot reach the daemon at {base}: {type(exc).__name__}: {exc}")
            except ApiError as exc:
                failed += 1
                err.print(f"asrctl: error: {path}: refused: {exc}", markup=False, highlight=False)
        if run_async:
            for path, job_id in submitted:
                typer.echo(f"{job_id}\t{path}")
            raise typer.Exit(1 if failed else 0)
        if output is not None:
            try:
                output.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # changed since the check before submitting
                common.fail(f"--output {output}: {exc.strerror}")
        failed += follow_all(client, submitted, fmt, output, err)
    if failed:
        raise typer.Exit(1)
