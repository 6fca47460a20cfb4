"""Full-text search in SQL against real PostgreSQL: stemming per language, websearch syntax, ranking,
visibility per key, keyset pages and match offsets (asr_daemon/queries/search.py, migrations 0006-0008)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from asr_daemon import queries
from asr_daemon.queries import search
from tests import stored


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh migrated database, with JSON codecs."""
    c = await asyncpg.connect(database)
    for typ in ("json", "jsonb"):
        await c.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    yield c
    await c.close()


async def add_job(
    conn: asyncpg.Connection, texts: list[str], *, language: str | None = "en", key: int | None = None
) -> uuid.UUID:
    """A completed job in `language` with one segment per text (2 s each), as the worker stores them."""
    job_id = await stored.running_job(conn, texts, language=language, key=key)
    await queries.complete(conn, job_id, stored.WORKER, {}, "cpu")
    return job_id


async def find(conn: asyncpg.Connection, q: str, **kw: object) -> list[search.Hit]:
    """Everything visible to everyone matching `q`."""
    return await search.search(conn, q, limit=int(kw.pop("limit", 50)), everyone=True, **kw)  # type: ignore[arg-type]  # keyword test options


async def test_english_words_match_by_stem_and_offsets_mark_them(conn: asyncpg.Connection) -> None:
    """An English transcript is found by a word's other forms; offsets mark exactly the matched words."""
    job = await add_job(conn, [" The children were running home.", " Nothing here."])
    hits = await find(conn, "run")
    assert [(h.job_id, h.seq) for h in hits] == [(job, 0)]
    text = hits[0].text
    assert [text[a:b] for a, b in hits[0].matches] == ["running"]
    assert (hits[0].start, hits[0].end) == (0.0, 2.0)


async def test_the_configuration_follows_each_jobs_language(conn: asyncpg.Connection) -> None:
    """German stems for a German job, no stemming (simple) for a language without a stemmer."""
    de = await add_job(conn, [" Die Kinder spielen im Garten."], language="de")
    ja = await add_job(conn, [" konnichiwa sekai"], language="ja")
    configs = dict(await conn.fetch("SELECT job_id, search_config::text FROM segments"))
    assert configs == {de: "german", ja: "simple"}
    assert [h.job_id for h in await find(conn, "Kind")] == [de]  # german stem of Kinder
    assert [h.job_id for h in await find(conn, "sekai")] == [ja]
    assert await find(conn, "sek") == []


async def test_websearch_syntax_phrases_or_and_exclusion(conn: asyncpg.Connection) -> None:
    """Quoted phrases match in order, `or` widens, `-word` excludes."""
    job = await add_job(
        conn,
        [" ask not what your country can do", " a road through the country", " the country road"],
    )
    assert [h.seq for h in await find(conn, '"country road"')] == [2]
    assert sorted(h.seq for h in await find(conn, "country road")) == [1, 2]
    assert sorted(h.seq for h in await find(conn, "road or ask")) == [0, 1, 2]
    assert sorted(h.seq for h in await find(conn, "country -road")) == [0]
    assert {h.job_id for h in await find(conn, "country")} == {job}


async def test_better_matches_rank_first(conn: asyncpg.Connection) -> None:
    """A segment with the words close together ranks above one where they are far apart."""
    await add_job(
        conn,
        [" bridge far far far far far far far far away lamps", " the bridge lamps glow"],
    )
    hits = await find(conn, "bridge lamps")
    assert [h.seq for h in hits] == [1, 0]
    assert hits[0].rank > hits[1].rank


async def test_callers_see_only_their_own_jobs(conn: asyncpg.Connection) -> None:
    """A key finds its own jobs only; anonymous callers only keyless jobs; admins everything."""
    key = await conn.fetchval("INSERT INTO api_keys (name, hash, prefix) VALUES ('k', 'h', 'p') RETURNING id")
    mine = await add_job(conn, [" secret harbour plans"], key=key)
    anon = await add_job(conn, [" public harbour plans"])
    as_key = await search.search(conn, "harbour", limit=10, api_key_id=key)
    as_anon = await search.search(conn, "harbour", limit=10, api_key_id=None)
    assert [h.job_id for h in as_key] == [mine]
    assert [h.job_id for h in as_anon] == [anon]
    assert {h.job_id for h in await find(conn, "harbour")} == {mine, anon}


async def test_pages_follow_the_cursor_without_gaps_or_repeats(conn: asyncpg.Connection) -> None:
    """Walking the cursor over equal-ranked hits in pages of 2 yields every hit exactly once, in order."""
    for _ in range(3):
        await add_job(conn, [" lemon cake", " more lemon cake", " lemon"])
    everything = await find(conn, "lemon")
    assert len(everything) == 9
    seen: list[tuple[uuid.UUID, int]] = []
    after = None
    while True:
        page = await search.search(conn, "lemon", limit=2, after=after, everyone=True)
        seen += [(h.job_id, h.seq) for h in page]
        if len(page) < 2:
            break
        after = search.Cursor.decode(search.cursor_after(page[-1]).encode())
    assert seen == [(h.job_id, h.seq) for h in everything]


async def test_a_query_of_stop_words_finds_nothing_and_does_not_fail(conn: asyncpg.Connection) -> None:
    """'the' is an English stop word: no hit, no error (and punctuation alone is no error either)."""
    await add_job(conn, [" the end"])
    assert await find(conn, "the") == []
    assert await find(conn, '"-" or ((') == []


@pytest.mark.parametrize(
    "query",
    [
        "-" * 33 + "a",
        "- " * 33 + "a",
        "-" * 499,
        "well " + "-" * 33 + " known",
        '-"' * 40 + "a",
        "-(" * 40 + "a",
        "- or " * 40 + "a",
        "-" * 40 + "1",
    ],
)
async def test_runs_of_dashes_that_negate_nothing_are_no_error(conn: asyncpg.Connection, query: str) -> None:
    """Dashes that begin no word (33 in a row overflowed PostgreSQL's parser: a 500) are read as spaces."""
    await add_job(conn, [" well known words"])
    hits = await find(conn, query)
    assert all(h.text == " well known words" for h in hits)
    assert await find(conn, "known -" + "-" * 40 + "words") == []  # the dash before a word still excludes it


async def test_languages_written_without_spaces_are_found_by_any_run_of_characters(conn: asyncpg.Connection) -> None:
    """Chinese, Japanese and Thai segments are found by two or more characters in order (not only by a
    whole clause), with their offsets; Latin words in `simple` are found as before (migration 0007)."""
    ja = await add_job(conn, ["今日は良い天気ですね。", "明日は雨です。"], language="ja")
    zh = await add_job(conn, ["我们明天去北京开会。"], language="zh")
    th = await add_job(conn, ["สวัสดีครับ"], language="th")
    latin = await add_job(conn, [" Karibu sana rafiki"], language="sw")  # Swahili: `simple` too
    hits = await find(conn, "天気")
    assert [(h.job_id, h.seq, h.matches) for h in hits] == [(ja, 0, [(5, 7)])]
    assert [(h.job_id, h.matches) for h in await find(conn, "北京")] == [(zh, [(5, 7)])]
    assert [h.job_id for h in await find(conn, "明天去北京")] == [zh]
    assert await find(conn, "北京明天") == []  # the characters in another order
    assert {h.job_id for h in await find(conn, "北京 or 雨です")} == {ja, zh}
    assert [h.job_id for h in await find(conn, "สวัสดี")] == [th]
    assert [(h.job_id, h.matches) for h in await find(conn, "rafiki")] == [(latin, [(13, 19)])]
    assert await find(conn, "天気 -良い") == []


async def test_one_character_of_a_language_written_without_spaces_is_found_wherever_it_is(
    conn: asyncpg.Connection,
) -> None:
    """One Chinese or Japanese character finds the segments saying it at the start, middle or end of a run,
    alone, or excluded with `-` (migration 0008), and nothing where it is not said."""
    zh = await add_job(conn, ["我们明天去北京开会。", "京", "东京很大"], language="zh")
    ja = await add_job(conn, ["今日は雨です。"], language="ja")
    assert sorted((h.seq, h.matches) for h in await find(conn, "京")) == [(0, [(6, 7)]), (1, [(0, 1)]), (2, [(1, 2)])]
    assert [(h.job_id, h.seq) for h in await find(conn, "会")] == [(zh, 0)]  # the last of its run
    assert [(h.job_id, h.seq) for h in await find(conn, "我")] == [(zh, 0)]  # the first of its run
    assert [h.job_id for h in await find(conn, "雨")] == [ja]
    assert await find(conn, "猫") == []
    assert [h.seq for h in await find(conn, "京 -北京")] == [1, 2]
    assert [h.seq for h in await find(conn, "北京")] == [0]  # two characters: still the phrase only


def test_offsets_are_dropped_when_the_marked_text_differs() -> None:
    """Offsets are only given when the marked text is the segment text plus markers (never wrong ones)."""
    assert search.match_offsets("a run", "a \x02run\x03") == [(2, 5)]
    assert search.match_offsets("a run", "a  \x02run\x03") == []
    assert search.match_offsets("héllo wörld", "héllo \x02wörld\x03") == [(6, 11)]


def test_a_cursor_from_elsewhere_is_refused() -> None:
    """A cursor this server did not make is a ValueError (the API answers 400)."""
    with pytest.raises(ValueError, match="cursor"):
        search.Cursor.decode("bm9wZQ")


@pytest.mark.parametrize("forged", ["0.5|{id}|99999999999", "0.5|{id}|-1", "nan|{id}|3", "inf|{id}|3"])
def test_a_forged_cursor_past_what_the_database_holds_is_refused(forged: str) -> None:
    """A well-formed cursor with a segment number past PostgreSQL's integer, or a rank that is not a
    number, is refused like any foreign cursor (it used to reach asyncpg: a 500)."""
    raw = forged.format(id=uuid.uuid4()).encode()
    with pytest.raises(ValueError, match="cursor"):
        search.Cursor.decode(base64.urlsafe_b64encode(raw).decode())
