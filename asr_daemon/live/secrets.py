"""Client secrets: short-lived tokens a browser passes in `Sec-WebSocket-Protocol` (it cannot set headers).

As OpenAI does it: a program holding an API key creates one with `POST /v1/realtime/client_secrets`
and hands its `value` (`ek_…`) to the browser, which opens
`new WebSocket(url, ["realtime", "openai-insecure-api-key." + value])`. A secret acts as the key
that made it, for opening live sessions only (never for the HTTP API), until it expires; it may
carry the session's configuration. Secrets live in this process's memory only (they outlive no
restart, like the sessions they open), stored by their sha256, never in clear.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

PREFIX = "ek_"
#: The subprotocol that carries a key or secret (OpenAI's name for it).
SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
#: Secrets held at most (oldest dropped first): bounded memory whatever clients do.
MAX_SECRETS = 10000


@dataclass(frozen=True)
class Secret:
    """What a secret stands for."""

    key_id: int | None
    key_name: str
    admin: bool
    expires_at: float
    session: dict[str, Any] | None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class ClientSecrets:
    """The live secrets of this process."""

    def __init__(self, clock: Any = time.time) -> None:
        self._by_digest: dict[str, Secret] = {}
        self._clock = clock

    def create(self, key_id: int | None, key_name: str, admin: bool, ttl: float,
               session: dict[str, Any] | None) -> tuple[str, Secret]:  # fmt: skip
        """A new secret's value and record."""
        self._purge()
        value = PREFIX + secrets.token_urlsafe(32)
        secret = Secret(key_id, key_name, admin, self._clock() + ttl, session)
        self._by_digest[_digest(value)] = secret
        while len(self._by_digest) > MAX_SECRETS:
            self._by_digest.pop(next(iter(self._by_digest)))
        return value, secret

    def lookup(self, value: str) -> Secret | None:
        """The secret with this value, unless unknown or expired."""
        secret = self._by_digest.get(_digest(value))
        if secret is None or secret.expires_at <= self._clock():
            return None
        return secret

    def _purge(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._by_digest.items() if s.expires_at <= now]:
            del self._by_digest[digest]


def offered(scope: dict[str, Any]) -> list[str]:
    """The subprotocols a WebSocket client offered, in order."""
    listed = scope.get("subprotocols") or []
    return [str(p).strip() for p in listed if str(p).strip()]


def subprotocol_token(scope: dict[str, Any]) -> str | None:
    """The key or secret carried in `openai-insecure-api-key.<token>`, if offered."""
    for p in offered(scope):
        if p.startswith(SUBPROTOCOL_PREFIX) and len(p) > len(SUBPROTOCOL_PREFIX):
            return p[len(SUBPROTOCOL_PREFIX) :]
    return None


def chosen_subprotocol(scope: dict[str, Any]) -> str | None:
    """The subprotocol to accept: `realtime` when offered, else the first that carries no token.

    A browser fails the handshake unless the server picks one of those it offered; a token is never
    echoed back.
    """
    plain = [p for p in offered(scope) if not p.startswith(SUBPROTOCOL_PREFIX)]
    if "realtime" in plain:
        return "realtime"
    return plain[0] if plain else None
