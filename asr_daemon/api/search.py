"""`GET /v1/search`: full-text search over every segment of every job the caller may see."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from asr_daemon import errors
from asr_daemon.api.auth import principal
from asr_daemon.api.deps import PoolDep
from asr_daemon.api.schemas import error_responses
from asr_daemon.queries import search

#: control characters mean nothing in a search (and PostgreSQL refuses NUL in text): read as spaces
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SearchHit(msgspec.Struct):
    """A segment that matches: where it is (job, segment number, seconds) and what it says.

    `matches` are [start, end) offsets into `text`, counted in Unicode code points, of the words the
    query matched (stems included: a search for "run" marks "running"); the text is never HTML.
    """

    job_id: str
    segment: int
    start: float
    end: float
    text: str
    matches: list[list[int]]
    rank: float
    filename: str | None
    language: str | None


class SearchResults(msgspec.Struct):
    """A page of hits, best first; `next_cursor` (when not null) fetches the next page."""

    object: str
    query: str
    data: list[SearchHit]
    next_cursor: str | None


@get(
    "/v1/search",
    tags=["search"],
    summary="Search every transcript",
    responses=error_responses(400),
)
async def search_segments(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    q: str = Parameter(
        description='What to find, as a web search box takes it: words, "a quoted phrase", `or`, `-word`. '
        "Words are matched by their stem in the language of each transcript.",
        max_length=search.MAX_QUERY_CHARS,
        pattern=r"\S",
    ),
    limit: int = Parameter(default=20, ge=1, le=100, description="Hits per page."),
    cursor: str | None = Parameter(default=None, description="`next_cursor` of the previous page."),
) -> SearchResults:
    """Segments that match `q` in the jobs the caller may see, ranked (ts_rank_cd), with match offsets."""
    if not q.strip():
        raise errors.BadRequest("q must not be empty: say what to search for")
    words = _CONTROL.sub(" ", q)
    try:
        after = search.Cursor.decode(cursor) if cursor else None
    except ValueError:
        raise errors.BadRequest("cursor is not one this server returned") from None
    who = principal(request)
    try:
        hits = await search.search(pool, words, limit=limit + 1, after=after, everyone=who.admin, api_key_id=who.key_id)
    except search.QueryTooComplex as exc:
        raise errors.BadRequest(str(exc)) from None
    more = len(hits) > limit
    hits = hits[:limit]
    return SearchResults(
        object="list",
        query=q,
        data=[
            SearchHit(
                job_id=str(h.job_id),
                segment=h.seq,
                start=round(h.start, 3),
                end=round(h.end, 3),
                text=h.text,
                matches=[[a, b] for a, b in h.matches],
                rank=h.rank,
                filename=h.filename,
                language=h.language,
            )
            for h in hits
        ],
        next_cursor=search.cursor_after(hits[-1]).encode() if more else None,
    )
