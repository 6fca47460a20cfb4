"""`ASR_REDIS_URL` checked the way redis-py's `parse_url` reads it, without importing redis (0.3 s on
every command's start). Messages never quote the URL: it may hold a password."""

from __future__ import annotations

from urllib.parse import urlsplit


def problem(url: str) -> str | None:
    """Why redis-py could not use `url` (one line for `invalid ASR_REDIS_URL: ...`), or None."""
    if not url.strip():
        return "empty: Redis cannot be turned off (default redis://127.0.0.1:6379/0; the daemon runs while it is down)"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "use redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH/TO/SOCKET"
    if parts.scheme == "unix":
        return None if parts.path else "unix:// needs the socket's path, e.g. unix:///run/redis/redis.sock"
    try:
        parts.port  # noqa: B018  # reading it raises ValueError for a port that is not 0-65535
    except ValueError:
        return "the port must be a number from 0 to 65535"
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return "the database after the host must be a number, e.g. redis://127.0.0.1:6379/0"
    return None
