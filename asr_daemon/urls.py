"""URLs built or checked in one place: the daemon's own `http://HOST:PORT` (IPv6 in brackets), and
`ASR_REDIS_URL` checked the way redis-py's `parse_url` reads it, without importing redis (0.3 s on
every command's start). Messages never quote a URL: it may hold a password."""

from __future__ import annotations

from urllib.parse import urlsplit


def redis_url_problem(url: str) -> str | None:
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


WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def daemon_url(host: str, port: int) -> str:
    """`http://HOST:PORT` where a client on this host reaches a daemon listening on `host`: a wildcard
    address becomes the loopback of its family, an IPv6 address gets brackets (`http://[::1]:8765`)."""
    bare = host.strip().removeprefix("[").removesuffix("]")
    bare = WILDCARDS.get(bare, bare)
    return f"http://[{bare}]:{port}" if ":" in bare else f"http://{bare}:{port}"
