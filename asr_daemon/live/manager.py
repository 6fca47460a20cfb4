"""The daemon's live sessions: admission (caps), the read loop and its limits, heartbeats, drain.

Policy between live sessions and queued file jobs: they do not share slots. File jobs keep their
`ASR_WORKERS` worker slots whatever happens live; live decodes take their own slots (as many as
`ASR_WORKERS`, the model's CTranslate2 replicas) and are bounded by `ASR_LIVE_MAX_SESSIONS`. A live
session's partial decodes are skipped while its previous one runs, so under load partial text
comes less often but the final text of each utterance is never skipped; a file job meanwhile keeps
running, at most slower (tests/e2e/test_live_limits.py holds both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import asyncpg

from asr_daemon import db, errors, keys
from asr_daemon.config import Settings
from asr_daemon.engine import modelchoice, models
from asr_daemon.live import protocol, store
from asr_daemon.live.protocol import ProtocolError
from asr_daemon.live.secrets import ClientSecrets
from asr_daemon.live.session import LARGE_APPEND, Closing, LiveSession
from asr_daemon.pipeline import cancels, queue

log = logging.getLogger(__name__)

#: Close codes (RFC 6455): normal, going away, policy violation, too big, internal error, try again later.
NORMAL, GOING_AWAY, POLICY, TOO_BIG, INTERNAL, TRY_LATER = 1000, 1001, 1008, 1009, 1011, 1013
#: Seconds a session is given to finish its utterances when it ends other than by a drain.
FINISH_TIMEOUT = 60.0


async def _discard_input(socket: Any, quiet: float = 0.2, limit: float = 2.0) -> None:
    """Read and drop what the client still sends until it pauses (`quiet` s; `limit` s at most).

    Closing a TCP socket with unread data makes the kernel answer with a reset, which can destroy
    the close frame before the client reads it: a flooding client would never learn why.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(socket.receive(), quiet)
        except TimeoutError:
            return
        if msg["type"] == "websocket.disconnect":
            return


class Cancelled(Closing):
    """The session's job was cancelled (DELETE /v1/jobs/{id}): stop at once, transcribe nothing more."""


class _Open(Protocol):
    job_id: uuid.UUID | None
    job_closed: bool


def lost_jobs(sent: Iterable[uuid.UUID], ours: Iterable[uuid.UUID], sessions: Iterable[_Open]) -> list[uuid.UUID]:
    """Jobs heartbeaten (`sent`) but no longer ours (`ours`: what the heartbeat updated) whose session is
    still open, read after the heartbeat returned: a session that closed meanwhile finished its job itself."""
    still = {s.job_id for s in sessions if s.job_id is not None and not s.job_closed}
    found = set(ours)
    return [j for j in sent if j not in found and j in still]


def model_alias(wanted: str | None) -> str | None:
    """OpenAI's transcription model names (`gpt-4o-transcribe`, `whisper-1`, …) mean the default model."""
    if wanted is None or wanted in modelchoice.DEFAULT_ALIASES or wanted.startswith("gpt-"):
        return None
    return wanted


class LiveManager:
    """Every live session of this process."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, cache: models.ModelCache, hub: queue.Hub,
                 owner: str) -> None:  # fmt: skip
        self.settings, self.pool, self.cache, self.hub = settings, pool, cache, hub
        self.owner = owner  # the worker's name: a crash leaves the job to the reaper like any other
        self.liveness = store.Liveness(pool)  # an open session's job is never reaped, however late its beat
        self.sessions: dict[str, LiveSession] = {}
        self.secrets = ClientSecrets(settings.live_max_secrets_per_key)
        self.decode_slots = asyncio.Semaphore(settings.workers)
        self.draining = False
        self._vad: Any = None
        self._vad_lock = asyncio.Lock()
        self._beat: asyncio.Task[None] | None = None
        self._listen: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None

    model_alias = staticmethod(model_alias)

    async def vad_model(self) -> Any:
        """Silero, loaded once (off the loop)."""
        async with self._vad_lock:
            if self._vad is None:
                from asr_daemon.live.vad import load_model

                self._vad = await asyncio.to_thread(load_model)
        return self._vad

    def start(self) -> None:
        """Start heartbeating the sessions' jobs, and put the live drain before the server's stop."""
        self._beat = asyncio.create_task(self._heartbeat_loop())
        if self.settings.run_worker:  # a cancel (DELETE /v1/jobs/{id}) is heard at once, not at the next beat
            self._listen = asyncio.create_task(cancels.Listener(self.settings, self.cancelled).run())
        self._hold_stop_signals(asyncio.get_running_loop())

    def _hold_stop_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drain live sessions on SIGTERM/SIGINT *before* Granian stops serving.

        Granian's worker stops its server on these signals and only then runs the lifespan's
        shutdown; by then every WebSocket is cut without a close frame. So its handlers (installed
        on this loop before the app started) are wrapped: the first signal drains the sessions
        (bounded by ASR_DRAIN_TIMEOUT), then hands over to Granian's own handler; a second signal
        hands over at once.
        """
        handlers = getattr(loop, "_signal_handlers", None)  # asyncio's private map: no public getter exists
        if not isinstance(handlers, dict):
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            original = handlers.get(sig)
            if original is None:
                continue

            def on_signal(original: Any = original) -> None:
                if self._stop_task is None:
                    task = loop.create_task(self.drain(self.settings.drain_timeout))
                    task.add_done_callback(lambda _: original._run())
                    self._stop_task = task
                else:  # a second signal while draining: stop now, as Granian would
                    original._run()

            loop.add_signal_handler(sig, on_signal)

    def admit(self, session: LiveSession) -> None:
        """Count `session` in, or raise `Closing` when one more session of its key would pass a cap."""
        s, key_id = self.settings, session.key_id
        if self.draining:
            raise Closing(GOING_AWAY, "the server is shutting down", protocol.error("server_shutting_down",
                          "the server is shutting down; reconnect shortly", kind="server_error"))  # fmt: skip
        if s.live_max_sessions == 0:
            raise Closing(
                POLICY,
                "live transcription is turned off on this server",
                protocol.error("live_disabled", "live transcription is turned off (ASR_LIVE_MAX_SESSIONS=0)"),
            )
        if len(self.sessions) >= s.live_max_sessions:
            raise Closing(TRY_LATER, "too many live sessions", protocol.error("session_limit_reached",
                          f"this server holds at most {s.live_max_sessions} live sessions; retry later"))  # fmt: skip
        mine = sum(1 for x in self.sessions.values() if x.key_id == key_id)
        if mine >= s.live_max_sessions_per_key:
            raise Closing(TRY_LATER, "too many live sessions for this key", protocol.error("session_limit_reached",
                          f"one key may hold at most {s.live_max_sessions_per_key} live sessions at once"))  # fmt: skip
        self.sessions[session.id] = session

    async def serve(self, session: LiveSession) -> None:
        """Run one session from `session.created` to its close frame; its job ends completed."""
        sender = asyncio.create_task(session.sender())
        finisher = asyncio.create_task(session.finisher())
        closing: Closing | None = None
        try:
            session.emit(protocol.event("session.created", session=session.view()))
            if session.configured:  # a client secret's configuration: the first session.update, its errors
                await self._dispatch(session, '{"type": "session.update", "session": {}}')  # events as any
            session.reader = asyncio.create_task(self._read(session))
            closing = await session.reader
        except asyncio.CancelledError:
            if session.stop_reason is None:
                raise
            closing = session.stop_reason
        except Closing as c:
            closing = c
        except Exception:
            log.exception("live_session_crashed", extra={"session": session.id})
            closing = Closing(INTERNAL, "internal error", protocol.error("server_error", "internal error",
                                                                          kind="server_error"))  # fmt: skip
        finally:
            await self._end(session, closing, sender, finisher)

    async def _end(self, s: LiveSession, closing: Closing | None, sender: asyncio.Task[None],
                   finisher: asyncio.Task[None]) -> None:  # fmt: skip
        try:
            transcribed = False
            if isinstance(closing, Cancelled):  # the backlog is not transcribed: nobody wants it any more
                for t in (finisher, *s.partials, *s.speculations):
                    t.cancel()
                await asyncio.wait([finisher, *s.partials, *s.speculations])  # a decode under way ends first
                transcribed = True  # the job ends cancelled (store.finish)
            else:
                s.wrap_up()
                timeout = self.settings.drain_timeout if self.draining else FINISH_TIMEOUT
                try:
                    await asyncio.wait_for(asyncio.shield(finisher), timeout)
                    transcribed = True
                except TimeoutError:
                    finisher.cancel()
                except Exception:  # a bug in the finisher must not keep the job open nor the slot taken
                    log.exception("live_finisher_crashed", extra={"session": s.id})
            for t in [*s.partials, *s.speculations]:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, 30)
            try:
                await s.close_job(transcribed)  # not transcribed to the end: queued for a worker to finish
            except Exception as exc:  # noqa: BLE001  # the job stays running: the reaper resumes it from the audio
                log.warning("live_job_not_closed", extra={"session": s.id, "error": type(exc).__name__})
            if closing is not None and closing.error is not None:
                s.emit(closing.error)
            with contextlib.suppress(asyncio.QueueFull):
                s.outbox.put_nowait(None)
            try:
                await asyncio.wait_for(sender, 5)
            except TimeoutError:
                sender.cancel()
            if closing is None and s.slow_client:
                closing = Closing(POLICY, "the client is not reading its events")
            if closing is not None:
                with contextlib.suppress(Exception):
                    await _discard_input(s.socket)
                    await asyncio.wait_for(s.socket.close(closing.code, closing.reason[:120]), 5)
        finally:
            tasks = (sender, finisher, *s.partials, *s.speculations)
            for t in tasks:
                t.cancel()
            try:  # a decode under way ends before its model is given back (decoding.to_thread_to_its_end)
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                s.release()
            self.sessions.pop(s.id, None)
            if s.job_id is not None:  # a job left running (its close failed) is the reaper's from now on
                try:
                    await self.liveness.release(s.job_id)
                except Exception as exc:  # noqa: BLE001  # a lost connection released the lock already
                    log.warning("live_unlock_failed", extra={"session": s.id, "error": type(exc).__name__})

    async def _read(self, s: LiveSession) -> Closing | None:
        """Handle client events in order until the client leaves (None) or a limit ends the session."""
        cfg = self.settings
        while True:
            if s.slow_client:
                return Closing(POLICY, "the client is not reading its events")
            now = time.monotonic()
            idle_left = s.last_audio + cfg.live_idle_timeout - now
            life_left = s.opened + cfg.live_max_session_s - now
            try:
                msg = await asyncio.wait_for(s.socket.receive(), max(0.0, min(idle_left, life_left)))
            except TimeoutError:
                if life_left <= idle_left:
                    return Closing(NORMAL, "session length limit reached", protocol.error("session_expired",
                                   f"a live session lasts at most {cfg.live_max_session_s:g} s"))  # fmt: skip
                return Closing(NORMAL, "idle timeout", protocol.error("idle_timeout",
                               f"no audio for {cfg.live_idle_timeout:g} s"))  # fmt: skip
            if msg["type"] == "websocket.disconnect":
                return None
            start, count = s.window
            s.window = (start, count + 1) if now - start < 1.0 else (now, 1)
            if s.window[1] > cfg.live_max_events_per_s:
                return Closing(POLICY, "too many events", protocol.error("rate_limit_exceeded",
                               f"at most {cfg.live_max_events_per_s} events per second"))  # fmt: skip
            text = msg.get("text")
            if text is None:
                s.emit(protocol.error("invalid_event", "binary frames are not supported: send JSON text events"))
                continue
            if len(text) > cfg.live_max_append_bytes * 4 // 3 + 65536:
                return Closing(TOO_BIG, "message too large", protocol.error("message_too_large",
                               f"an event may carry at most {cfg.live_max_append_bytes} bytes of audio"))  # fmt: skip
            await self._dispatch(s, text)

    async def _dispatch(self, s: LiveSession, text: str) -> None:
        client_event: str | None = None
        try:
            # a large append's JSON is parsed in a thread, as its audio is decoded (session.LARGE_APPEND)
            ev = await asyncio.to_thread(protocol.loads, text) if len(text) > LARGE_APPEND else protocol.loads(text)
            if not isinstance(ev, dict):
                raise ProtocolError("invalid_event", "an event must be a JSON object with a type")
            client_event = ev.get("event_id") if isinstance(ev.get("event_id"), str) else None
            etype = ev.get("type")
            if etype == "input_audio_buffer.append":
                await s.append(ev)
            elif etype in ("session.update", "transcription_session.update"):
                await s.configure(etype, ev)
            elif etype == "input_audio_buffer.commit":
                s.commit(client_event)
            elif etype == "input_audio_buffer.clear":
                s.clear()
            else:
                shown = etype[:60] if isinstance(etype, str) else repr(etype)[:60]
                raise ProtocolError("unknown_event", f"unknown or unsupported event type {shown!r} "
                                    f"(a transcription session accepts {', '.join(sorted(protocol.CLIENT_EVENTS))})",
                                    "type")  # fmt: skip
        except ProtocolError as e:
            s.emit(protocol.error(e.code, e.message, param=e.param, client_event=client_event, kind=e.kind))
        except errors.ModelNotFound as e:
            s.emit(protocol.error("model_not_found", e.message, param="session.audio.input.transcription.model",
                                  client_event=client_event))  # fmt: skip
        except db.ERRORS as exc:  # PostgreSQL away (the HTTP API answers 503): the client may come back later
            log.error("live_database_unavailable", extra={"session": s.id, "error": type(exc).__name__})
            raise Closing(TRY_LATER, "the database is unavailable", protocol.error("server_unavailable",
                          "the database is unavailable; retry shortly", kind="server_error")) from None  # fmt: skip

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self.beat()

    async def beat(self) -> None:
        """Heartbeat the sessions' jobs; close the sessions whose job was cancelled or whose key was revoked."""
        sessions = list(self.sessions.values())
        sizes = {
            s.job_id: (s.audio.seconds, s.audio.data_bytes)
            for s in sessions
            if s.job_id is not None and s.audio is not None and not s.job_closed
        }
        try:
            await self.liveness.refresh()
            ours = await store.heartbeat(self.pool, self.owner, sizes)
            revoked = await keys.inactive(self.pool, (s.key_id for s in sessions if s.key_id is not None))
        except Exception as exc:  # noqa: BLE001  # the database may be away a moment; the next beat tries again
            log.warning("live_heartbeat_failed", extra={"error": type(exc).__name__})
            return
        for job_id in lost_jobs(sizes, ours, self.sessions.values()):
            log.warning("live_job_lost", extra={"job_id": str(job_id)})
        for key_id in revoked:
            self.secrets.forget_key(key_id)
        for s in sessions:
            if s.key_id in revoked:
                log.info("live_session_key_revoked", extra={"session": s.id, "key_id": s.key_id})
                self.stop(s, Closing(POLICY, "the API key was revoked", protocol.error(
                    "invalid_api_key", "the API key of this session was revoked: the session ends")))  # fmt: skip
            elif s.job_id is not None and ours.get(s.job_id):  # DELETE /v1/jobs/{id}
                self.stop(s, Cancelled(NORMAL, "the session's job was cancelled"))

    def cancelled(self, job_id: uuid.UUID) -> None:
        """A client cancelled `job_id` (PostgreSQL NOTIFY, `pipeline.cancels`): end its session if it is ours."""
        for s in list(self.sessions.values()):
            if s.job_id == job_id:
                self.stop(s, Cancelled(NORMAL, "the session's job was cancelled"))

    @staticmethod
    def stop(s: LiveSession, closing: Closing) -> None:
        """End `s` from outside its reader: it reads no more and closes as `closing` says."""
        if s.reader is not None and s.stop_reason is None:
            s.stop_reason = closing
            s.reader.cancel()

    async def drain(self, timeout: float) -> None:
        """SIGTERM: stop reading, finish every session's current utterance, close with a reason."""
        self.draining = True
        for s in list(self.sessions.values()):
            s.stop_reason = Closing(GOING_AWAY, "server shutting down")
            if s.reader is not None:
                s.reader.cancel()
        deadline = time.monotonic() + timeout + 5
        while self.sessions and time.monotonic() < deadline:  # noqa: ASYNC110  # a poll bounded by the deadline
            await asyncio.sleep(0.05)
        if self._beat is not None and not self.sessions:
            self._beat.cancel()
        if self._listen is not None:
            self._listen.cancel()
        await self.liveness.close()  # its connection back before the pool closes (a session still open is reapable)
