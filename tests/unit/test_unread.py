"""DrainUnreadBody in-process: after an early answer the rest of the body is read, within its bounds."""

from __future__ import annotations

import asyncio
from typing import Any

from asr_daemon.accesslog import Message, Receive, Scope, Send
from asr_daemon.api.unread import DrainUnreadBody, has_body

CHUNK = b"x" * 1000


class Peer:
    """The server side of one request: hands out body chunks (with optional pauses), records what was sent."""

    def __init__(self, chunks: int, pause: float = 0.0, stall_after: int | None = None, disconnect: bool = False):
        self.left = chunks
        self.pause = pause
        self.stall_after = stall_after
        self.disconnect = disconnect
        self.reads = 0
        self.log: list[str] = []

    async def receive(self) -> Message:
        if self.stall_after is not None and self.reads >= self.stall_after:
            await asyncio.sleep(3600)
        if self.pause:
            await asyncio.sleep(self.pause)
        self.reads += 1
        self.log.append("read")
        if self.disconnect and self.reads > 1:
            return {"type": "http.disconnect"}
        self.left -= 1
        return {"type": "http.request", "body": CHUNK, "more_body": self.left > 0}

    async def send(self, message: Message) -> None:
        self.log.append(message["type"])


def scope(**headers: str) -> Scope:
    return {"type": "http", "method": "POST", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers 429 without reading a byte of the body."""
    await send({"type": "http.response.start", "status": 429, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def read_all(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers."""
    while (await receive()).get("more_body"):
        pass
    await refuse(scope, receive, send)


def middleware(app: Any, max_bytes: int = 1 << 20, timeout: float = 5.0, idle_gap: float = 1.0) -> DrainUnreadBody:
    return DrainUnreadBody(app, max_bytes, timeout, idle_gap)


async def test_the_answer_goes_out_first_then_the_rest_of_the_body_is_read() -> None:
    """A refusal before the body: the answer is sent at once, then all 5 chunks are read to the end."""
    peer = Peer(5)
    await middleware(refuse)(scope(**{"content-length": "5000"}), peer.receive, peer.send)
    assert peer.log == ["http.response.start", "http.response.body", *["read"] * 5]
    assert peer.left == 0


async def test_draining_stops_at_the_byte_bound() -> None:
    """With 2500 bytes allowed, a 10-chunk body is read for 3 chunks, not to its end."""
    peer = Peer(10)
    await middleware(refuse, max_bytes=2500)(scope(**{"content-length": "10000"}), peer.receive, peer.send)
    assert peer.reads == 3


async def test_draining_stops_when_the_client_stops_sending() -> None:
    """A client that sent one chunk and then nothing: draining gives up after the idle gap."""
    peer = Peer(10, stall_after=1)
    t0 = asyncio.get_running_loop().time()
    read, complete = await middleware(refuse, idle_gap=0.05).drain(peer.receive)
    assert (read, complete) == (1000, False)
    assert asyncio.get_running_loop().time() - t0 < 1


async def test_draining_stops_at_the_time_bound() -> None:
    """A trickling client (a chunk every 30 ms, never idle): draining ends after the total timeout."""
    peer = Peer(1000, pause=0.03)
    read, complete = await middleware(refuse, timeout=0.2, idle_gap=1.0).drain(peer.receive)
    assert not complete and 0 < read < 20 * 1000


async def test_a_disconnect_ends_draining() -> None:
    """The client went away after the answer: nothing more is awaited."""
    peer = Peer(10, disconnect=True)
    read, complete = await middleware(refuse).drain(peer.receive)
    assert (read, complete) == (1000, True) and peer.reads == 2


async def test_a_body_the_app_read_is_not_read_again() -> None:
    """An app that consumed the whole body: no receive() after its answer."""
    peer = Peer(3)
    await middleware(read_all)(scope(**{"content-length": "3000"}), peer.receive, peer.send)
    assert peer.log == ["read"] * 3 + ["http.response.start", "http.response.body"]


async def test_requests_without_a_body_and_a_zero_bound_are_left_alone() -> None:
    """No Content-Length (a GET), Content-Length 0, or ASR_UNREAD_BODY_DRAIN_BYTES=0: no receive() at all."""
    for sc, bound in (
        (scope(), 1 << 20),
        (scope(**{"content-length": "0"}), 1 << 20),
        (scope(**{"content-length": "9"}), 0),
    ):
        peer = Peer(3)
        await middleware(refuse, max_bytes=bound)(sc, peer.receive, peer.send)
        assert peer.reads == 0, sc


def test_has_body_reads_content_length_and_transfer_encoding() -> None:
    """A body is announced by a non-zero Content-Length or by Transfer-Encoding (chunked)."""
    assert has_body(scope(**{"content-length": "12"}))
    assert has_body(scope(**{"transfer-encoding": "chunked"}))
    assert not has_body(scope(**{"content-length": "0"}))
    assert not has_body(scope(host="x"))
