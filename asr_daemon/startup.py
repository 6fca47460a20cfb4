"""The Granian worker's entry point: with ASR_PRELOAD the default model starts loading before the
app is even imported.

Importing the app (Litestar, numpy, PyAV, asyncpg, redis) keeps one core busy for ~0.3 s, and
CTranslate2 reads and converts a model's weights without holding the GIL, so the two overlap on a
second core; the preload in the lifespan used to start only after the imports (docs/benchmarks.md).
Only this module, the settings and logging are imported before the load starts. The app takes the
load over from there: `asr_daemon.engine.models.make_loader` hands it to the model cache.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from asr_daemon import logs
from asr_daemon.config import Settings
from asr_daemon.engine import device, modelchoice

if TYPE_CHECKING:  # the app and the models import what this module must not, before the load starts
    from asr_daemon.accesslog import ASGIApp
    from asr_daemon.engine.models import Loaded

log = logging.getLogger(__name__)


def app_from_env() -> ASGIApp:
    """Granian's factory by import path: settings from `ASR_*` variables, then `app_for`."""
    return app_for(Settings())


def app_for(settings: Settings) -> ASGIApp:
    """The app for `settings` (built by `asrctl serve` before the fork): logging, the early load, the app.

    No early load in an API-only process (`ASR_RUN_WORKER=false`): it runs no model.
    """
    logs.configure(settings.log_level)
    if settings.device == "cuda" or (settings.device == "auto" and device.nvidia_present()):
        settings = modelchoice.for_device(settings)
    early = start_load(settings) if settings.preload and settings.run_worker else None
    from asr_daemon.api import app  # the heavy imports, while the model loads

    return app.build(settings, early)


def start_load(settings: Settings) -> Future[Loaded | None]:
    """Load the default model in a thread now; the future holds its `models.Loaded` (None when absent)."""
    done: Future[Loaded | None] = Future()

    def run() -> None:
        try:
            from asr_daemon.engine import models

            done.set_result(models.load_default(settings))
        except BaseException as exc:  # noqa: BLE001  # handed to whoever takes the load over
            done.set_exception(exc)

    threading.Thread(target=run, name="model-preload", daemon=True).start()
    return done
