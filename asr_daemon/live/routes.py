"""The HTTP side of live transcription: `GET /v1/realtime` (WebSocket) and `POST /v1/realtime/client_secrets`.

The caller is identified by the app's guard (`asr_daemon.api.auth`): `Authorization: Bearer <key>`
for programs, or a key or client secret in the `openai-insecure-api-key.<token>` subprotocol for
browsers. Never in the URL: a query string lands in logs and browser history.
"""

from __future__ import annotations

import json
import math
from typing import Any

from litestar import Request, WebSocket, post, websocket

from asr_daemon import errors
from asr_daemon.api import auth
from asr_daemon.api.deps import LiveDep
from asr_daemon.api.schemas import error_responses
from asr_daemon.engine import modelchoice
from asr_daemon.live import protocol
from asr_daemon.live.manager import POLICY, TRY_LATER, model_alias
from asr_daemon.live.secrets import SecretsFull, chosen_subprotocol
from asr_daemon.live.session import Closing, LiveSession


@websocket("/v1/realtime")
async def realtime(socket: WebSocket[Any, Any, Any], live: LiveDep) -> None:
    """A live transcription session, OpenAI Realtime protocol (`?intent=transcription`)."""
    manager = live
    await socket.accept(subprotocols=chosen_subprotocol(socket.scope))  # type: ignore[arg-type]  # ASGI scope
    refused = _refused(socket)
    if refused is not None:
        await _refuse(socket, refused)
        return
    who = auth.principal(socket)
    session = LiveSession(socket, manager, who.key_id, _preset(socket))
    try:
        if socket.query_params.get("intent", "transcription") != "transcription":
            raise Closing(POLICY, "only intent=transcription is served", protocol.error(
                "unsupported_intent", "this server serves transcription sessions only: connect with "
                "?intent=transcription"))  # fmt: skip
        if not manager.settings.run_worker:  # an API-only process loads no model (`asrctl serve --no-worker`)
            raise Closing(POLICY, "live transcription is not served by this process", protocol.error(
                "live_unavailable", "this server's HTTP side runs no model (ASR_RUN_WORKER=false); live "
                "transcription needs a process that runs the worker"))  # fmt: skip
        manager.admit(session)
    except Closing as c:
        await _refuse(socket, c)
        return
    await manager.serve(session)


async def _refuse(socket: WebSocket[Any, Any, Any], c: Closing) -> None:
    """Send the refusal's error event, then close with its code and reason."""
    if c.error is not None:
        await socket.send_text(_dump(c.error))
    await socket.close(c.code, c.reason)


def _preset(socket: WebSocket[Any, Any, Any]) -> protocol.SessionConfig | None:
    """The configuration a client secret carries (it counts as the first `session.update`)."""
    secret = auth.client_secret(socket)
    return None if secret is None else secret.session


def _refused(socket: WebSocket[Any, Any, Any]) -> Closing | None:
    """The guard's refusal of this handshake as a close with a reason (an error event, then 1008 / 1013).

    Refused before the upgrade, a client would see a bare HTTP 403: browsers and the openai SDK show
    no reason for it. Accepted first, it reads an `error` event with a code, then the close frame.
    """
    refusal = auth.refusal(socket)
    if refusal is None:
        return None
    if isinstance(refusal, errors.RateLimited):
        return Closing(TRY_LATER, "rate limit exceeded", protocol.error("rate_limit_exceeded", refusal.message))
    return Closing(POLICY, "invalid API key", protocol.error("invalid_api_key", refusal.message))


def _dump(ev: dict[str, Any]) -> str:
    return json.dumps(ev)


@post(
    "/v1/realtime/client_secrets",
    status_code=200,
    summary="Create a short-lived client secret for a browser's live session",
    responses=error_responses(400, 403, 404),
)
async def client_secrets(request: Request[Any, Any, Any], live: LiveDep) -> dict[str, Any]:
    """Create a short-lived client secret for a browser to open a live session (OpenAI's shape)."""
    who = auth.principal(request)
    if auth.client_secret(request) is not None:
        raise errors.Forbidden("a client secret cannot create client secrets")
    raw = await request.body()
    try:
        body = protocol.loads(raw) if raw.strip() else {}
    except protocol.ProtocolError:
        raise errors.BadRequest("the body must be JSON (nested at most a few hundred levels deep)") from None
    if not isinstance(body, dict):
        raise errors.BadRequest("the body must be a JSON object")
    manager = live
    ttl = _ttl(body.get("expires_after"), manager.settings.live_secret_ttl)
    session = body.get("session")
    cfg = protocol.SessionConfig()
    if session is not None:
        try:
            cfg = protocol.parse_session("session.update", session, cfg)
        except protocol.ProtocolError as e:
            raise errors.BadRequest(e.message, param=e.param) from None
        modelchoice.resolve(manager.settings.models_dir, model_alias(cfg.model), manager.settings.model)  # or 404
    try:
        value, secret = manager.secrets.create(who.key_id, who.name, who.admin, ttl, cfg if session else None)
    except SecretsFull as e:
        raise errors.RateLimited(str(e), retry_after=e.retry_after) from None
    view = cfg.view(protocol.new_id("sess"), None, manager.settings.model)
    view["expires_at"] = math.floor(secret.expires_at)
    return {"value": value, "expires_at": math.floor(secret.expires_at), "session": view}


def _ttl(expires_after: Any, default: float) -> float:
    if expires_after is None:
        return default
    if not isinstance(expires_after, dict):
        raise errors.BadRequest("expires_after must be an object", param="expires_after")
    if expires_after.get("anchor", "created_at") != "created_at":
        raise errors.BadRequest("expires_after.anchor must be 'created_at'", param="expires_after.anchor")
    seconds = expires_after.get("seconds", default)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 10 <= seconds <= 7200:
        raise errors.BadRequest("expires_after.seconds must be from 10 to 7200", param="expires_after.seconds")
    return float(seconds)
