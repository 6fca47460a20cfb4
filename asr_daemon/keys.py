"""API keys: create (the token is shown once), list, revoke, and look one up by its token.

A token is `asr_` followed by 43 URL-safe characters from `secrets.token_urlsafe(32)`: 256 random
bits. Only its SHA-256 is stored. A fast unsalted hash is enough here, unlike for passwords:
slow, salted hashes exist to make guessing low-entropy secrets expensive, and nobody can enumerate
2^256 tokens however fast the hash is. A plain digest can also be looked up through a unique
index, so checking a key costs one indexed query and no per-request key-derivation work.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from asr_daemon.queries import Conn, Tx

TOKEN_PREFIX = "asr_"
SHOWN_PREFIX = 12  # characters of the token kept in clear to recognise a key in `keys ls`
MAX_TOKEN_CHARS = 200


@dataclass(frozen=True)
class Key:
    """A stored API key (never its token)."""

    id: int
    name: str
    prefix: str
    rate: int | None
    admin: bool
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Key:
        """Build from an `api_keys` row."""
        return cls(
            id=row["id"],
            name=row["name"],
            prefix=row["prefix"],
            rate=row["rate"],
            admin=row["admin"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
        )

    def to_json(self) -> dict[str, object]:
        """Plain form for `keys ls --json`."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "rate": self.rate,
            "admin": self.admin,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class KeyExists(ValueError):
    """An active key already has this name."""


def new_token() -> str:
    """A fresh random token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The stored form of a token: hex SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


async def create(conn: Conn, name: str, *, rate: int | None = None, admin: bool = False) -> tuple[Key, str]:
    """Store a new key; returns it and its token (the only time the token exists outside the client)."""
    token = new_token()
    try:
        row = await conn.fetchrow(
            "INSERT INTO api_keys (name, hash, prefix, rate, admin) VALUES ($1, $2, $3, $4, $5) RETURNING *",
            name,
            digest(token),
            token[:SHOWN_PREFIX],
            rate,
            admin,
        )
    except asyncpg.UniqueViolationError:
        raise KeyExists(f"an active key is already named {name!r}: revoke it first or pick another name") from None
    assert row is not None
    return Key.from_row(row), token


async def list_keys(conn: Conn, *, include_revoked: bool = False) -> list[Key]:
    """Keys, oldest first; revoked ones only when asked."""
    rows = await conn.fetch("SELECT * FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY id", include_revoked)
    return [Key.from_row(r) for r in rows]


class AmbiguousKey(ValueError):
    """A reference names more than one active key: nothing was revoked."""

    def __init__(self, ref: str, matches: list[Key]) -> None:
        self.ref, self.matches = ref, matches
        listed = "; ".join(f"id {k.id} name {k.name!r} prefix {k.prefix}" for k in matches)
        super().__init__(
            f"{ref[:40]!r} matches {len(matches)} active keys ({listed}): nothing revoked; "
            "name one by its id (`asrctl keys revoke --id N`) or its prefix"
        )


#: active keys a reference names: by name, numeric id, token or shown prefix (at least 8 characters)
_MATCHING = """
    SELECT * FROM api_keys
    WHERE revoked_at IS NULL
      AND (name = $1 OR id::text = $1 OR hash = $2
           OR (length($1) >= 8 AND left(prefix, length($1)) = $1))
    ORDER BY id
    FOR UPDATE
"""


async def revoke(conn: Tx, ref: str) -> Key | None:
    """Revoke the one active key `ref` names (its name, numeric id, shown prefix or token); None when
    none does; `AmbiguousKey` when it names several (an id of one and the name of another, say)."""
    async with conn.transaction():
        rows = await conn.fetch(_MATCHING, ref, digest(ref))
        if len(rows) > 1:
            raise AmbiguousKey(ref, [Key.from_row(r) for r in rows])
        return await revoke_id(conn, rows[0]["id"]) if rows else None


async def revoke_id(conn: Conn, key_id: int) -> Key | None:
    """Revoke the active key with this id; None when there is none."""
    row = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING *", key_id
    )
    return Key.from_row(row) if row is not None else None


async def count_active(conn: Conn) -> int:
    """Keys not revoked."""
    n: int = await conn.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
    return n


async def lookup(conn: Conn, token: str) -> Key | None:
    """The active key whose token this is, or None (unknown, malformed or revoked)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        return None
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL", digest(token))
    return Key.from_row(row) if row is not None else None


async def by_id(conn: Conn, key_id: int) -> Key | None:
    """The active key with this id, or None (revoked, or no such key)."""
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1 AND revoked_at IS NULL", key_id)
    return Key.from_row(row) if row is not None else None


async def inactive(conn: Conn, key_ids: Iterable[int]) -> set[int]:
    """Those of `key_ids` that are no longer active (revoked, or gone)."""
    wanted = sorted(set(key_ids))
    if not wanted:
        return set()
    rows = await conn.fetch("SELECT id FROM api_keys WHERE id = ANY($1::bigint[]) AND revoked_at IS NULL", wanted)
    return set(wanted) - {r["id"] for r in rows}
