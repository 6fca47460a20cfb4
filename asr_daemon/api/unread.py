"""Answer first, then read what is left of the request body: an early refusal must reach the client.

A request can be answered before its body was read: a 429 for the upload slots or a full queue, a
401 from the key guard, a 415 for the wrong Content-Type, a 413 half-way through, an Idempotency-Key
replay. When the app returns with body bytes still unread, Granian (hyper) makes one attempt to
read the rest and then closes the connection; with bytes still arriving the kernel answers them
with a reset. A client still sending its body then loses the answer: httpx's async client reported
`ReadError` (37 of 76 refusals in the issue's scenario), a socket that writes its whole request
before reading got `BrokenPipeError`; httpx's sync client and the openai SDK, which read the answer
after a failed write, and curl, which reads while it sends, mostly got through (issue 18).

`DrainUnreadBody` lets the answer go out at once (clients that read while they send, like curl or a
slow socket, see it straight away), then reads and discards the rest of the body, bounded by bytes
(`ASR_UNREAD_BODY_DRAIN_BYTES`), by time (`ASR_UNREAD_BODY_DRAIN_TIMEOUT`) and by an idle gap
(`IDLE_GAP`, for a client that stopped sending when it saw the answer). With the body read to its
end the connection closes cleanly and the client reads its status. A client that sent
`Expect: 100-continue` and got the answer first never sends the body: Granian's receive() answers
`http.disconnect` at once (hyper sends no `100 Continue` after a final answer), so there is nothing
to wait for. Granian lets the app go on receiving after its answer is complete: that is what this relies on.

Beyond the bounds the connection is closed as before: a body larger than the bound costs the
client its answer only when it does not read while it sends (the price of not spending the
server's bandwidth on a refused gigabyte).
"""

from __future__ import annotations

import asyncio
import logging

from asr_daemon.accesslog import ASGIApp, Message, Receive, Scope, Send
from asr_daemon.config import Settings

log = logging.getLogger(__name__)

IDLE_GAP = 2.0
"""Seconds without a byte after which draining stops: the client has stopped sending."""


def has_body(scope: Scope) -> bool:
    """True when the request announces a body (a non-zero Content-Length, or Transfer-Encoding)."""
    for name, value in scope.get("headers", ()):
        lname = name.lower()
        if lname == b"transfer-encoding":
            return True
        if lname == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


class DrainUnreadBody:
    """Pure ASGI middleware: after the answer, read the unread rest of the body (bounded) and drop it."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float, idle_gap: float = IDLE_GAP) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.idle_gap = idle_gap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve through the wrapped app; drain what it left unread once it has answered."""
        if scope["type"] != "http" or self.max_bytes <= 0 or not has_body(scope):
            await self.app(scope, receive, send)
            return
        ended = False
        answered = False

        async def tracked_receive() -> Message:
            nonlocal ended
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                ended = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        await self.app(scope, tracked_receive, tracked_send)
        if answered and not ended:
            await self.drain(receive)

    async def drain(self, receive: Receive) -> tuple[int, bool]:
        """Read and discard the body until its end or a bound; returns (bytes read, whether it ended)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + self.timeout
        read, complete, why = 0, False, "bytes"
        while read < self.max_bytes:
            left = deadline - loop.time()
            if left <= 0:
                why = "timeout"
                break
            try:
                message = await asyncio.wait_for(receive(), min(self.idle_gap, left))
            except TimeoutError:
                why = "idle" if loop.time() < deadline else "timeout"
                break
            if message["type"] != "http.request":  # the client went away: nothing left to read
                complete, why = True, "disconnect"
                break
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                complete, why = True, "end"
                break
        log.debug(
            "unread_body_drained",
            extra={"bytes": read, "complete": complete, "stop": why, "seconds": round(loop.time() - t0, 3)},
        )
        return read, complete


def with_drain(app: ASGIApp, settings: Settings) -> ASGIApp:
    """`app` wrapped so that early answers reach their clients (`ASR_UNREAD_BODY_DRAIN_*`)."""
    return DrainUnreadBody(app, settings.unread_body_drain_bytes, settings.unread_body_drain_timeout)
