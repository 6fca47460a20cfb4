"""Client secrets: short-lived tokens a browser passes in `Sec-WebSocket-Protocol` (it cannot set headers).

As OpenAI does it: a program holding an API key creates one with `POST /v1/realtime/client_secrets`
and hands its `value` (`ek_…`) to the browser, which opens
`new WebSocket(url, ["realtime", "openai-insecure-api-key." + value])`. A secret acts as the key
that made it, for opening live sessions only (never for the HTTP API), until it expires; it may
carry the session's configuration. Secrets live in this process's memory only (they outlive no
restart, like the sessions they open), stored by their sha256, never in clear.

Each key (all anonymous callers together: one bucket) holds at most `ASR_LIVE_MAX_SECRETS_PER_KEY`
unexpired secrets; one more is refused (`SecretsFull`, a 429) rather than evicting anyone's, so no
caller can void another's. A secret opens sessions only while its key is active: the guard checks the
key at every handshake, and a revoked key's secrets are forgotten (`forget_key`).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from asr_daemon.live.protocol import SessionConfig

PREFIX = "ek_"
#: The subprotocol that carries a key or secret (OpenAI's name for it).
SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


@dataclass(frozen=True)
class Secret:
    """What a secret stands for."""

    key_id: int | None
    key_name: str
    admin: bool
    expires_at: float
    session: SessionConfig | None  # parsed when made: a secret holds no client JSON of its own


class SecretsFull(Exception):
    """The caller holds as many unexpired secrets as it may; `retry_after`: seconds until one expires."""

    def __init__(self, cap: int, retry_after: int) -> None:
        super().__init__(
            f"this key holds {cap} unexpired client secrets, the most it may (ASR_LIVE_MAX_SECRETS_PER_KEY); "
            f"one expires in {retry_after} s: reuse a secret, or ask for shorter-lived ones (expires_after)"
        )
        self.retry_after = retry_after


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class ClientSecrets:
    """The live secrets of this process, at most `per_key` unexpired ones per key (see the module's doc)."""

    def __init__(self, per_key: int = 1000, clock: Any = time.time) -> None:
        self._by_digest: dict[str, Secret] = {}
        self._held: Counter[int | None] = Counter()  # unexpired secrets per key (None: anonymous callers)
        self.per_key = per_key
        self._clock = clock

    def create(self, key_id: int | None, key_name: str, admin: bool, ttl: float,
               session: SessionConfig | None) -> tuple[str, Secret]:  # fmt: skip
        """A new secret's value and record; `SecretsFull` when `key_id` holds `per_key` already."""
        self._purge()
        if self._held[key_id] >= self.per_key:
            first = min(s.expires_at for s in self._by_digest.values() if s.key_id == key_id)
            raise SecretsFull(self.per_key, max(1, math.ceil(first - self._clock())))
        value = PREFIX + secrets.token_urlsafe(32)
        secret = Secret(key_id, key_name, admin, self._clock() + ttl, session)
        self._by_digest[_digest(value)] = secret
        self._held[key_id] += 1
        return value, secret

    def lookup(self, value: str) -> Secret | None:
        """The secret with this value, unless unknown or expired."""
        secret = self._by_digest.get(_digest(value))
        if secret is None or secret.expires_at <= self._clock():
            return None
        return secret

    def forget_key(self, key_id: int) -> int:
        """Drop every secret `key_id` made (the key was revoked); how many there were."""
        gone = [d for d, s in self._by_digest.items() if s.key_id == key_id]
        for digest in gone:
            del self._by_digest[digest]
        self._held.pop(key_id, None)
        return len(gone)

    def _purge(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._by_digest.items() if s.expires_at <= now]:
            self._held[self._by_digest.pop(digest).key_id] -= 1
        self._held = +self._held  # keys with no secret left


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
