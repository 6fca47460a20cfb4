"""PostgreSQL connection strings, parsed and built with libpq's rules (never by URL string surgery).

`ASR_DATABASE_URL` may be any form libpq documents: a URI (`postgresql://` or `postgres://`, with
or without a host — `postgresql:///asr` is the local socket —, a socket directory in `?host=` or
percent-encoded in the host part, several hosts, any parameter in the query) or `key=value` pairs
(`host=/var/run/postgresql dbname=asr`). `parse` turns each into libpq's keywords; `to_url` writes
the one URI that asyncpg and libpq read the same way (socket directories and host lists in the
query, one database name in the path, every value percent-encoded), and `to_conninfo` the
`key='value'` string handed to pg_dump, pg_restore and psql.

Settings normalise the variable with `normalize`, so the daemon (asyncpg) and the client tools
(libpq) always connect to the same place. Error messages never quote the string: it may hold a
password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

SCHEMES = ("postgresql://", "postgres://")


class DsnError(ValueError):
    """The connection string cannot be read; the message says why without quoting it."""


#: libpq connection parameters asyncpg does not know (it would send them to the server as settings, and
#: the server refuses them): left to the client tools; `connect_timeout` becomes asyncpg's `timeout`
LIBPQ_ONLY = frozenset(
    {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
     "tcp_user_timeout", "fallback_application_name", "gssencmode", "channel_binding", "requiressl",
     "sslcompression", "load_balance_hosts"}
)  # fmt: skip


def parse(dsn: str) -> dict[str, str]:
    """libpq keywords (`host`, `port`, `user`, `password`, `dbname`, `sslmode`, …) of a URI or a
    `key=value` string. Raises DsnError for anything else (a port that is not one included)."""
    text = dsn.strip()
    if text.lower().startswith(SCHEMES):
        params = _parse_uri(text)
    elif "=" in text:
        params = _parse_pairs(text)
    else:
        params = None
    if params is not None:
        for port in params.get("port", "").split(","):
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise DsnError("the port must be a number from 1 to 65535")
        timeout = params.get("connect_timeout", "")
        if timeout and not timeout.strip().lstrip("-").isdigit():
            raise DsnError("connect_timeout must be a whole number of seconds")
        return params
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise DsnError(f"scheme {scheme[:20]!r} is not PostgreSQL's: write postgresql://… or key=value pairs")
    raise DsnError("not a PostgreSQL connection string: write postgresql://[user@][host][:port]/dbname or key=value")


def _parse_uri(text: str) -> dict[str, str]:
    """libpq's URI grammar: scheme://[user[:password]@][host[:port][,…]][/dbname][?key=value&…]."""
    rest = text.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    if "#" in query or "#" in path:
        raise DsnError("'#' is not allowed in a PostgreSQL URI: percent-encode it as %23")
    params: dict[str, str] = {}
    userinfo, at, hostspec = authority.partition("@")
    if not at:
        userinfo, hostspec = "", authority
    if userinfo:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon:
            params["password"] = unquote(password)
    params.update(_parse_hosts(hostspec))
    if slash and path:
        params["dbname"] = unquote(path)
    for item in query.split("&") if query else []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise DsnError("a URI parameter is not key=value (after '?', separated by '&')")
        key, value = unquote(key), unquote(value)
        if key == "ssl" and value == "true":  # libpq's JDBC-compatible spelling
            key, value = "sslmode", "require"
        params[key] = value  # as libpq: the query overrides what the URI said before
    return params


def _parse_hosts(hostspec: str) -> dict[str, str]:
    """`host[:port][,…]` (IPv6 in brackets, percent-encoded socket directories) as libpq's lists."""
    hosts: list[str] = []
    ports: list[str] = []
    for spec in hostspec.split(",") if hostspec else []:
        if spec.startswith("["):
            addr, bracket, tail = spec[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise DsnError("an IPv6 address in a PostgreSQL URI must be in brackets: [::1]:5432")
            port = tail[1:]
        else:
            addr, _, port = spec.partition(":")
        hosts.append(unquote(addr))
        ports.append(unquote(port))
    out = {}
    if any(hosts):
        out["host"] = ",".join(hosts)
    if any(ports):
        out["port"] = ",".join(ports)
    return out


def _parse_pairs(text: str) -> dict[str, str]:
    """libpq's `key = value` pairs: values single-quoted (with \\' and \\\\) or bare up to a space."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return params
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            raise DsnError(f"missing '=' after {key[:30]!r} in the connection string")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value, i = _read_value(text, i)
        if key == "database":  # asyncpg's spelling of libpq's dbname
            key = "dbname"
        params[key] = value


def _read_value(text: str, i: int) -> tuple[str, int]:
    """The value starting at `text[i]` (quoted or bare, backslash escapes) and the index after it."""
    n = len(text)
    value: list[str] = []
    if i < n and text[i] == "'":
        i += 1
        while True:
            if i >= n:
                raise DsnError("unterminated quoted value in the connection string")
            if text[i] == "\\" and i + 1 < n:
                value.append(text[i + 1])
                i += 2
            elif text[i] == "'":
                return "".join(value), i + 1
            else:
                value.append(text[i])
                i += 1
    while i < n and not text[i].isspace():
        if text[i] == "\\" and i + 1 < n:
            i += 1
        value.append(text[i])
        i += 1
    return "".join(value), i


def _is_socket(host: str) -> bool:
    """A Unix-socket directory (or Linux abstract socket) rather than a host name or address."""
    return host.startswith(("/", "@"))


def to_url(params: Mapping[str, str]) -> str:
    """The URI for `params` that asyncpg and libpq both read as libpq would read `params`."""
    rest = {k: v for k, v in params.items() if v != ""}
    user = rest.pop("user", None)
    password = rest.pop("password", None)
    dbname = rest.pop("dbname", None)
    host = rest.pop("host", None)
    port = rest.pop("port", None)
    netloc = ""
    if user is not None or password is not None:
        netloc = quote(user or "", safe="")
        if password is not None:
            netloc += ":" + quote(password, safe="")
        netloc += "@"
    query: dict[str, str] = {}
    if host and "," not in host and not _is_socket(host):
        netloc += f"[{host}]" if ":" in host else quote(host, safe="")
        if port:
            if "," in port:
                query["port"] = port
            else:
                netloc += ":" + port
    else:
        if host:
            query["host"] = host
        if port:
            query["port"] = port
    query.update(rest)
    url = "postgresql://" + netloc + "/" + (quote(dbname, safe="") if dbname else "")
    if query:
        url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='/,')}" for k, v in query.items())
    return url


def to_conninfo(params: Mapping[str, str]) -> str:
    """libpq's `key='value'` form (for pg_dump, pg_restore and psql); empty when nothing is set."""

    def quoted(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={quoted(v)}" for k, v in params.items() if v != "")


def normalize(dsn: str) -> str:
    """`dsn` as the URI `to_url` writes (what Settings hold)."""
    return to_url(parse(dsn))


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server, user and options, another database."""
    return to_url({**parse(dsn), "dbname": dbname})


def dbname(dsn: str) -> str | None:
    """The database `dsn` connects to: its `dbname`, else PGDATABASE (None: libpq would fall back to
    the user name, which we do not guess)."""
    return parse(dsn).get("dbname") or os.environ.get("PGDATABASE") or None


def for_asyncpg(dsn: str, timeout: float) -> tuple[str, float]:
    """(URI, connect timeout) for asyncpg: the libpq-only parameters left out, `connect_timeout` (when
    set and positive, as libpq reads it) instead of `timeout`."""
    params = parse(dsn)
    wait = params.get("connect_timeout", "")
    seconds = float(max(2, int(wait))) if wait and int(wait) > 0 else timeout  # libpq's minimum: 2 s
    return to_url({k: v for k, v in params.items() if k not in LIBPQ_ONLY}), seconds


def for_tools(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment with PGPASSWORD): for the client tools, so that
    the password never appears on a command line (visible in `ps`) or in their output."""
    params = parse(dsn)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return to_conninfo(params), env


# --- where a connection goes: what asyncpg tries, in order ---------------------------------------------

#: where asyncpg looks when a DSN and PGHOST name no host (asyncpg.connect_utils, POSIX)
DEFAULT_HOSTS = ("/run/postgresql", "/var/run/postgresql", "/tmp", "/private/tmp", "localhost")


def _split_hosts(spec: str) -> tuple[list[str], list[str]]:
    """`host[:port],...` of a URL's netloc into hosts and ports ('' where none is given)."""
    hosts: list[str] = []
    ports: list[str] = []
    for part in spec.split(","):
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = part.partition(":")
        hosts.append(unquote(host))
        ports.append(port)
    return hosts, ports


def targets(dsn: str, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The (host or socket directory, port) pairs asyncpg tries for `dsn`, in order, as it decides
    them: the URL's hosts and ports, else its `host`/`port` parameters, else PGHOST/PGPORT, else its
    default socket directories and localhost on 5432."""
    env = os.environ if environ is None else environ
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    netloc_hosts = parts.netloc.rpartition("@")[2]
    hosts, ports = _split_hosts(netloc_hosts) if netloc_hosts else ([], [])
    if not any(hosts) and "host" in query:
        hosts = query["host"][-1].split(",")
    if not any(hosts) and env.get("PGHOST"):
        hosts, ports = _split_hosts(env["PGHOST"])
    if not any(hosts):
        hosts = list(DEFAULT_HOSTS)
    given = [p for p in ports if p] or query.get("port", [""])[-1].split(",")
    given = [p for p in given if p] or env.get("PGPORT", "").split(",")
    given = [p for p in given if p] or ["5432"]
    if len(given) == 1:
        given = given * len(hosts)
    return [(h, given[i] if i < len(given) else "5432") for i, h in enumerate(hosts)]
