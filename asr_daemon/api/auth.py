"""Who is calling: the API-key guard, the caller (`Principal`) it leaves on the request, rate limits.

Open without a key: `/healthz`, `/readyz`, `/metrics` (they say nothing about jobs or audio, and
probes and scrapers carry no keys), the OpenAPI schema under `/docs` and the web page (`/`,
`/static/`: it holds no data, and asks for a key when the API needs one). Everything else needs
`Authorization: Bearer <key>` while keys are required (`Settings.keys_required`).

While keys are optional, a request without a key is anonymous: anonymous callers share the jobs
made without a key, and see no key's jobs; they may manage models (the keyless operator on
loopback has no other way to). A token that looks like one of ours (`asr_…`) is always checked, so a mistyped
or revoked key fails loudly with 401; any other token (OpenAI clients insist on sending one) counts
as no key.

A WebSocket (`/v1/realtime`) the guard refuses is not refused at the handshake (a bare HTTP 403 tells
a client nothing): the refusal is left on the connection (`refusal`) for the handler, which accepts,
sends an `error` event with its reason and closes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler

from asr_daemon import errors, jobs, keys
from asr_daemon.accesslog import PROBE_PATHS
from asr_daemon.api import deps
from asr_daemon.config import Settings
from asr_daemon.live import secrets as live_secrets
from asr_daemon.queries import Conn

log = logging.getLogger(__name__)

PUBLIC_PATHS = PROBE_PATHS | {"/"}
PUBLIC_PREFIXES = ("/docs", "/static/")  # the web page's files: it asks for a key itself
_SCOPE_KEY = "asr_principal"
_SECRET_KEY = "asr_client_secret"
_REFUSAL_KEY = "asr_refusal"


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    key_id: int | None
    name: str
    admin: bool = False

    @property
    def may_administer(self) -> bool:
        """Admin keys, and anonymous callers (possible only while keys are optional), manage models."""
        return self.admin or self.key_id is None

    def may_see(self, job: jobs.Job) -> bool:
        """True when this caller may see (and cancel) `job`: its own, or any for an admin key.

        Anonymous callers own the jobs made without a key (`api_key_id` NULL) and nothing else.
        """
        return self.admin or job.api_key_id == self.key_id


ANONYMOUS = Principal(key_id=None, name="anonymous")


def require_admin(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """403 unless the caller may manage models (an admin key, or anonymous while keys are optional)."""
    if not principal(connection).may_administer:
        raise errors.Forbidden("only an admin key may do this (`asrctl keys create --admin`)")


def is_public(path: str) -> bool:
    """True for paths served without a key."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller the guard identified (anonymous for public paths); the guard's refusal, if it refused."""
    state = connection.scope.get("state", {})
    if isinstance(state.get(_REFUSAL_KEY), errors.AsrError):
        raise state[_REFUSAL_KEY]  # a WebSocket handler that did not check `refusal` first still refuses
    found = state.get(_SCOPE_KEY)
    return found if isinstance(found, Principal) else ANONYMOUS


def refusal(connection: ASGIConnection[Any, Any, Any, Any]) -> errors.AsrError | None:
    """Why the guard refused this WebSocket (Unauthorized, RateLimited), or None."""
    found = connection.scope.get("state", {}).get(_REFUSAL_KEY)
    return found if isinstance(found, errors.AsrError) else None


async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Identify the caller from its bearer token, enforce keys when required, count its rate."""
    try:
        await _identify(connection)
    except (errors.Unauthorized, errors.RateLimited) as e:
        if connection.scope["type"] != ScopeType.WEBSOCKET:
            raise
        connection.scope.setdefault("state", {})[_REFUSAL_KEY] = e  # the handler says why (module doc)


async def _identify(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    if is_public(connection.scope["path"]):
        return
    settings = deps.settings_of(connection.app)
    header = connection.headers.get("authorization")
    token = _bearer(header)
    if token is None and connection.scope["type"] == ScopeType.WEBSOCKET:  # browsers: the subprotocol (issue 21)
        token = live_secrets.subprotocol_token(connection.scope)  # type: ignore[arg-type]  # ASGI scope
    if token is not None and token.startswith(live_secrets.PREFIX):
        await _use_client_secret(connection, token)
        return
    if token is None or (not settings.keys_required and not token.startswith(keys.TOKEN_PREFIX)):
        if settings.keys_required:
            raise errors.Unauthorized(
                "the Authorization header must be `Bearer <key>`"
                if header
                else "this server requires an API key: send `Authorization: Bearer <key>` "
                "(an operator creates one with `asrctl keys create --name NAME`)"
            )
        who = ANONYMOUS
    else:
        key = await keys.lookup(deps.services(connection.app).pool, token)
        if key is None:
            client = connection.client.host if connection.client else None
            log.warning("auth_rejected", extra={"path": connection.scope["path"][:200], "client": client})
            raise errors.Unauthorized("the API key is not valid: it is unknown or was revoked")
        who = Principal(key_id=key.id, name=key.name, admin=key.admin)
        await deps.services(connection.app).limiter.check(
            key.prefix, settings.default_rate if key.rate is None else key.rate
        )
    connection.scope.setdefault("state", {})[_SCOPE_KEY] = who


async def _use_client_secret(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> None:
    """A client secret (`ek_…`) stands for the key that made it, to open live sessions only, while that key
    is active (checked at every handshake: revoking a key voids its secrets) and within its rate."""
    if connection.scope["type"] != ScopeType.WEBSOCKET:
        raise errors.Unauthorized("a client secret opens live sessions (/v1/realtime) only; use an API key here")
    services = deps.services(connection.app)
    secret = services.live.secrets.lookup(token)
    if secret is None:
        raise errors.Unauthorized("the client secret is unknown or expired")
    if secret.key_id is not None:
        key = await keys.by_id(services.pool, secret.key_id)
        if key is None:
            services.live.secrets.forget_key(secret.key_id)
            log.warning("auth_rejected", extra={"path": connection.scope["path"][:200], "reason": "key_revoked"})
            raise errors.Unauthorized("the client secret's API key was revoked")
        settings = deps.settings_of(connection.app)
        await services.limiter.check(key.prefix, settings.default_rate if key.rate is None else key.rate)
    state = connection.scope.setdefault("state", {})
    state[_SCOPE_KEY] = Principal(key_id=secret.key_id, name=secret.key_name, admin=secret.admin)
    state[_SECRET_KEY] = secret


def client_secret(connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
    """The client secret the caller came with (None for an API key or none)."""
    return connection.scope.get("state", {}).get(_SECRET_KEY)


def _bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when absent or another scheme."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_keys_exist(settings: Settings, pool: Conn) -> None:
    """At start-up: refuse to serve when keys are required and none is active."""
    if settings.keys_required and await keys.count_active(pool) == 0:
        log.error("api_keys_missing", extra={"host": settings.host, "auth": settings.auth})
        raise SystemExit(
            "asr-server: API keys are required here (ASR_AUTH=on, or ASR_HOST is not loopback) but no key "
            "exists: create one with `asrctl keys create --name NAME`, or set ASR_AUTH=off to serve "
            "without keys on a trusted network"
        )
