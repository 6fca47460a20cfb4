"""A keyless daemon answers browsers only for its own page: no other web site may use it through them.

Without keys (`ASR_AUTH=auto` on loopback, the default, or `off`) the loopback address is the only
protection, and a browser on the same machine crosses it for any page it shows:
- **DNS rebinding**: a page whose name the attacker re-points at 127.0.0.1 is, to the browser, the
  same origin as the daemon; it could read the archive, the transcripts and the audio. Its requests
  carry the attacker's name in `Host`, so a keyless daemon answers only a `Host` that is an IP
  address, `localhost` (or a `.localhost` name), or a name in `ASR_ALLOWED_HOSTS`.
- **Cross-site requests** CORS does not stop: a form-like POST (`text/plain`, no preflight) to load a
  model or delete a job, and WebSockets, which CORS does not cover at all (live sessions count
  against the anonymous caller's limit and add jobs to its archive). A state-changing request or a
  WebSocket whose `Origin` is neither the daemon's own (scheme aside: a TLS proxy may stand in front)
  nor one of `ASR_CORS_ORIGINS` is refused.

Programs (curl, the SDKs) send no `Origin` and use the address they connect to: unaffected. With keys
required the key is the protection (a foreign page cannot know it), and nothing here applies.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from urllib.parse import urlsplit

from asr_daemon.accesslog import ASGIApp, Receive, Scope, Send
from asr_daemon.api import cors
from asr_daemon.config import Settings

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def hostname(host: str) -> str:
    """The name in a `Host` header, without its port (`[::1]:8000` → `::1`), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """True for a `Host` a rebinding page cannot have: an IP address, `localhost` or `*.localhost`
    (browsers resolve those to loopback themselves), or a name the operator listed."""
    name = hostname(host)
    if name in allowed or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str, host: str, allowed: list[str]) -> bool:
    """True when `origin` is the daemon's own (its host and port are the request's `Host`) or listed."""
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.strip().lower()


def refusal(scope: Scope, host: str, origin: str | None, settings: Settings) -> str | None:
    """Why a keyless daemon refuses this request (None: it may go on)."""
    if settings.keys_required or scope["type"] not in ("http", "websocket"):
        return None
    names = frozenset(hostname(h) for h in settings.allowed_hosts.split(",") if h.strip())
    if host and not host_allowed(host, names | {hostname(settings.host)}):  # no Host: not a browser
        return (
            f"Host {hostname(host)[:100]!r} is not this server's: without API keys it answers only to an IP "
            "address or localhost (list other names in ASR_ALLOWED_HOSTS)"
        )
    unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
    if unsafe and origin is not None and not origin_allowed(origin, host, cors.origins(settings)):
        return (
            f"a page from {origin[:100]!r} may not use this server: without API keys only its own page may "
            "(allow other pages in ASR_CORS_ORIGINS)"
        )
    return None


class SameOrigin:
    """Pure ASGI middleware: refuses (403) what `refusal` names, before the app sees it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", ())} if scope["type"] != "lifespan" else {}
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers[b"origin"].decode("latin-1") if b"origin" in headers else None
        why = refusal(scope, host, origin, self.settings)
        if why is None:
            await self.app(scope, receive, send)
            return
        log.warning("request_refused_foreign_site", extra={"path": str(scope.get("path", ""))[:200]})
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})  # before accept: HTTP 403
            return
        body = json.dumps({"error": {"message": why, "type": "forbidden", "code": "forbidden"}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
