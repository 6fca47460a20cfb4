"""Full-text search over stored segments (migration 0006): the SQL, the cursor, the match offsets.

A query is parsed by `websearch_to_tsquery` ("quoted phrases", `or`, `-word`) in every text-search
configuration segments are stored in (chosen from each job's language, `simple` when PostgreSQL has
no stemmer for it) and each segment is matched in its own configuration only: an English segment
against the English stems of the query, a German one against the German stems. Hits are ranked by
`ts_rank_cd`, then newest job first, then in segment order; pages follow a keyset cursor.

Match offsets come from `ts_headline` (which knows the stems and phrases that matched) with two
control characters as markers, turned into [start, end) character offsets into the segment text.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime

from asr_daemon.queries import Conn

#: markers ts_headline puts around each match (control characters: never in a transcript's text)
_START, _STOP = "\x02", "\x03"
_HEADLINE_OPTIONS = f'HighlightAll=true, StartSel="{_START}", StopSel="{_STOP}"'
MAX_QUERY_CHARS = 500


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last hit's rank, job creation time, job id and segment."""

    rank: float
    created_at: datetime
    job_id: uuid.UUID
    seq: int

    def encode(self) -> str:
        """An opaque URL-safe string."""
        raw = f"{self.rank!r}|{self.created_at.isoformat()}|{self.job_id}|{self.seq}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor `encode` made; ValueError for anything else."""
        try:
            rank, created, job, seq = base64.urlsafe_b64decode(text.encode() + b"==").decode().split("|")
            return cls(float(rank), datetime.fromisoformat(created), uuid.UUID(job), int(seq))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError("not a search cursor") from exc


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
    job_created_at: datetime


_SEARCH = f"""
WITH q AS (
    SELECT c.config, websearch_to_tsquery(c.config, $1) AS query
    FROM (SELECT config FROM search_languages UNION SELECT 'simple'::regconfig) AS c (config)
), hits AS (
    SELECT s.job_id, s.seq, s.start_s, s.end_s, s.text, q.config, q.query,
           ts_rank_cd(s.search_vector, q.query)::float8 AS rank,
           j.created_at, j.filename, j.language
    FROM q
    JOIN segments s ON s.search_config = q.config AND s.search_vector @@ q.query
    JOIN jobs j ON j.id = s.job_id
    WHERE ($2 OR j.api_key_id IS NOT DISTINCT FROM $3::bigint)
)
SELECT h.job_id, h.seq, h.start_s, h.end_s, h.text, h.rank, h.created_at, h.filename, h.language,
       ts_headline(h.config, h.text, h.query, '{_HEADLINE_OPTIONS}') AS marked
FROM hits h
WHERE $5::float8 IS NULL
   OR h.rank < $5
   OR (h.rank = $5 AND (h.created_at < $6
       OR (h.created_at = $6 AND (h.job_id < $7 OR (h.job_id = $7 AND h.seq > $8)))))
ORDER BY h.rank DESC, h.created_at DESC, h.job_id DESC, h.seq
LIMIT $4
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
    """Segments matching `query`, best first; only key `api_key_id`'s jobs unless `everyone`."""
    rows = await conn.fetch(
        _SEARCH,
        query,
        everyone,
        api_key_id,
        limit,
        after.rank if after else None,
        after.created_at if after else None,
        after.job_id if after else None,
        after.seq if after else None,
    )
    return [
        Hit(
            job_id=r["job_id"],
            seq=r["seq"],
            start=r["start_s"],
            end=r["end_s"],
            text=r["text"],
            matches=match_offsets(r["text"], r["marked"]),
            rank=r["rank"],
            filename=r["filename"],
            language=r["language"],
            job_created_at=r["created_at"],
        )
        for r in rows
    ]


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
    return Cursor(hit.rank, hit.job_created_at, hit.job_id, hit.seq)
