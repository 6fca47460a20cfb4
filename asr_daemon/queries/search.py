"""Full-text search over stored segments (migration 0006): the SQL, the cursor, the match offsets.

A query is parsed by `websearch_to_tsquery` ("quoted phrases", `or`, `-word`) in every text-search
configuration segments are stored in (chosen from each job's language, `simple` when PostgreSQL has
no stemmer for it) and each segment is matched in its own configuration only: an English segment
against the English stems of the query, a German one against the German stems. Hits are ranked by
`ts_rank_cd` (then by job, then in segment order); pages follow a keyset cursor.

Match offsets come from `ts_headline` (which knows the stems and phrases that matched) with two
control characters as markers, turned into [start, end) character offsets into the segment text.
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from dataclasses import dataclass

import asyncpg

from asr_daemon.jobs import MAX_SEQ
from asr_daemon.queries.conn import Conn

#: markers ts_headline puts around each match (control characters: never in a transcript's text)
_START, _STOP = "\x02", "\x03"
_HEADLINE_OPTIONS = f'HighlightAll=true, StartSel="{_START}", StopSel="{_STOP}"'
MAX_QUERY_CHARS = 500

#: a dash that begins no word and no quoted phrase negates nothing; 33 of them in a row overflow
#: PostgreSQL's query parser ("tsquery stack too small", a 500 before they were read as spaces)
_IDLE_DASH = re.compile(r'-(?![\w"])')


class QueryTooComplex(ValueError):
    """PostgreSQL's query parser gave up on the query (too deeply nested): the caller's to simplify."""


def websearch_text(query: str) -> str:
    """`query` as `websearch_to_tsquery` gets it: dashes that negate nothing read as spaces."""
    return _IDLE_DASH.sub(" ", query)


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last hit's rank, job id and segment."""

    rank: float
    job_id: uuid.UUID
    seq: int

    def encode(self) -> str:
        """An opaque URL-safe string."""
        raw = f"{self.rank!r}|{self.job_id}|{self.seq}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor `encode` made; ValueError for anything else."""
        try:
            rank, job, seq = base64.urlsafe_b64decode(text.encode() + b"==").decode().split("|")
            cursor = cls(float(rank), uuid.UUID(job), int(seq))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError("not a search cursor") from exc
        if not math.isfinite(cursor.rank) or not 0 <= cursor.seq <= MAX_SEQ:
            raise ValueError("not a search cursor")
        return cursor


@dataclass(frozen=True)
class Hit:
    """One matching segment."""

    job_id: uuid.UUID
    seq: int
    start: float
    end: float
    text: str
    matches: list[tuple[int, int]]
    rank: float
    filename: str | None
    language: str | None


#: a query matching more segments than this is ranked among the first this many found (ranking
#: every one of 50,000 matches of a near-stop-word would take the better part of a second)
MAX_RANKED = 10_000

_SEARCH = f"""
WITH q AS MATERIALIZED (
    -- `simple` holds the languages written without spaces as character pairs (migration 0007), one
    -- character of them is a prefix (0008)
    SELECT u.config,
           CASE WHEN u.config = 'simple'::regconfig
                THEN asr_single_prefixes(websearch_to_tsquery(u.config, asr_pairs($1, true)), $1)
                ELSE websearch_to_tsquery(u.config, $1) END
             AS query
    FROM search_configs_used u
), any_q AS (
    -- every configuration's reading of the query in one tsquery: what the GIN index looks up
    SELECT string_agg('(' || query::text || ')', ' | ')::tsquery AS query FROM q WHERE numnode(query) > 0
), matched AS (
    SELECT s.job_id, s.seq, q.config, q.query, ts_rank_cd(s.search_vector, q.query)::float8 AS rank
    FROM segments s
    JOIN q ON q.config = s.search_config
    WHERE s.search_vector @@ (SELECT query FROM any_q)
      AND s.search_vector @@ q.query  -- read in the segment's own configuration
      AND ($2 OR s.job_id IN (SELECT id FROM jobs WHERE api_key_id IS NOT DISTINCT FROM $3::bigint))
    LIMIT {MAX_RANKED}
), page AS (
    SELECT m.job_id, m.seq, m.config, m.query, m.rank
    FROM matched m
    WHERE $5::float8 IS NULL
       OR m.rank < $5
       OR (m.rank = $5 AND (m.job_id < $6 OR (m.job_id = $6 AND m.seq > $7)))
    ORDER BY m.rank DESC, m.job_id DESC, m.seq
    LIMIT $4
)
SELECT p.job_id, p.seq, s.start_s, s.end_s, s.text, p.rank, j.filename, j.language,
       ts_headline(p.config, s.text, p.query, '{_HEADLINE_OPTIONS}') AS marked
FROM page p
JOIN segments s ON s.job_id = p.job_id AND s.seq = p.seq
JOIN jobs j ON j.id = p.job_id
ORDER BY p.rank DESC, p.job_id DESC, p.seq
"""


async def search(
    conn: Conn,
    query: str,
    *,
    limit: int,
    after: Cursor | None = None,
    everyone: bool = False,
    api_key_id: int | None = None,
) -> list[Hit]:
    """Segments matching `query`, best first; only key `api_key_id`'s jobs unless `everyone`.
    Raises QueryTooComplex when PostgreSQL cannot parse the query (nested past its parser's stack)."""
    try:
        rows = await conn.fetch(
            _SEARCH,
            websearch_text(query),
            everyone,
            api_key_id,
            limit,
            after.rank if after else None,
            after.job_id if after else None,
            after.seq if after else None,
        )
    except asyncpg.InternalServerError as exc:
        if "tsquery" not in str(exc):
            raise
        raise QueryTooComplex(
            "the search is too deeply nested for the database: use fewer brackets and dashes"
        ) from None
    return [
        Hit(
            job_id=r["job_id"],
            seq=r["seq"],
            start=r["start_s"],
            end=r["end_s"],
            text=r["text"],
            matches=match_offsets(r["text"], r["marked"]) or unspaced_offsets(r["text"], query),
            rank=r["rank"],
            filename=r["filename"],
            language=r["language"],
        )
        for r in rows
    ]


#: a run of the scripts written without spaces: migration 0007's `asr_unspaced_runs()`
_UNSPACED = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]+"
)


def unspaced_offsets(text: str, query: str) -> list[tuple[int, int]]:
    """[start, end) offsets of the query's runs of unspaced script (Chinese, Japanese, Thai, …) in
    `text`: those segments match by character pairs, which `ts_headline` cannot mark in the text."""
    spans = []
    for run in set(_UNSPACED.findall(query)):
        at = text.find(run)
        while at >= 0:
            spans.append((at, at + len(run)))
            at = text.find(run, at + len(run))
    return sorted(spans)


def match_offsets(text: str, marked: str) -> list[tuple[int, int]]:
    """[start, end) offsets (in characters) of the marked spans of `marked` in `text`.

    `marked` is `text` with each match between the start and stop markers; should it differ from
    `text` in anything else, there are no offsets rather than wrong ones.
    """
    spans: list[tuple[int, int]] = []
    plain: list[str] = []
    pos = 0
    start: int | None = None
    for ch in marked:
        if ch == _START:
            start = pos
        elif ch == _STOP and start is not None:
            if pos > start:
                spans.append((start, pos))
            start = None
        else:
            plain.append(ch)
            pos += 1
    if "".join(plain) != text:
        return []
    return spans


def cursor_after(hit: Hit) -> Cursor:
    """The cursor of the page that follows `hit`."""
    return Cursor(hit.rank, hit.job_id, hit.seq)
