"""`asrctl search "QUERY"`: full-text search over every transcript, through the daemon's public API.

Prints one hit per line, best first: `job  hh:mm:ss  text`, the job as the short id `jobs show`
takes, the time where the segment starts, the words that matched emphasized (on a terminal; plain
text when piped). Exits 1 when nothing matched, as grep does.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.text import Text

from asr_daemon.cli import common
from asr_daemon.cli.transcribe import _explain, base_url

EMPHASIS = "bold reverse"


def clock(seconds: float) -> str:
    """hh:mm:ss of a time in seconds (rounded down)."""
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def line(hit: dict[str, Any]) -> Text:
    """One hit as `job  hh:mm:ss  text`, the matched spans of the text emphasized."""
    raw: str = hit["text"]
    text = raw.strip()
    shift = len(raw) - len(raw.lstrip())
    out = Text(f"{hit['job_id'][:8]}  {clock(hit['start'])}  ")
    base = len(out)
    out.append(text)
    for start, end in hit["matches"]:
        a, b = max(0, start - shift), min(len(text), end - shift)
        if a < b:
            out.stylize(EMPHASIS, base + a, base + b)
    return out


def search(
    query: Annotated[str, typer.Argument(help='What to find: words, "a phrase", or, -word.')],
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many hits.")] = 20,
    url: Annotated[str | None, typer.Option(envvar="ASR_URL", help="API base URL.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="ASR_API_KEY", help="API key, if the daemon needs one.")] = None,
) -> None:
    """Search every transcript (the jobs your key may see), best matches first."""
    if not query.strip():
        common.fail("the query is empty: say what to search for", code=2)
    base = base_url(common.settings(), url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = Console(soft_wrap=True, highlight=False)
    shown = 0
    cursor: str | None = None
    with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(60.0, connect=30.0)) as client:
        while shown < limit:
            params: dict[str, str | int] = {"q": query, "limit": min(100, limit - shown)}
            if cursor:
                params["cursor"] = cursor
            try:
                response = client.get("/v1/search", params=params)
            except httpx.TransportError as exc:
                common.fail(f"cannot reach the daemon at {base}: {type(exc).__name__}: {exc}")
            if response.status_code != 200:
                common.fail(_explain(response), code=2 if response.status_code == 400 else 1)  # 400: the query
            page = response.json()
            for hit in page["data"]:
                out.print(line(hit))
            shown += len(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                break
    if shown == 0:
        Console(stderr=True).print("no matches", highlight=False)
        raise typer.Exit(1)
