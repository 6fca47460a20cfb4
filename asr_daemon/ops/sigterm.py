"""Hear SIGTERM/SIGINT in Granian's worker process the moment it arrives, beside Granian itself.

Granian's worker takes both signals through its event loop (`loop.add_signal_handler`): the byte the
C-level handler writes to the loop's wake-up fd. It then stops accepting, waits for every open
connection to close and only then runs the ASGI lifespan's shutdown. An event stream or a request
waiting for its job would hold the stop (and the worker would go on claiming jobs) for as long as the
client stays. `on_terminate` adds a Python-level handler: CPython still writes the wake-up byte (so
Granian's handler runs as before) and also calls ours, which schedules the app's stop at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_terminate(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on the running loop when SIGTERM/SIGINT arrives; returns the undo.

    Only where the event loop already takes the signal (Granian's worker): elsewhere (a test's thread,
    a process where SIGTERM still kills) nothing is installed, so no stop is ever swallowed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, signal.Handlers | Callable[[int, FrameType | None], object] | int | None] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)  # the loop's own handler (Granian's) runs from the wake-up fd
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)

    for sig in SIGNALS:
        before = signal.getsignal(sig)
        if not callable(before):  # SIG_DFL, SIG_IGN or not from Python: the loop does not take it
            continue
        previous[sig] = before
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return undo
