"""The one settings object: every knob of the daemon, read from `ASR_*` environment variables.

Built once at the edge (the CLI, or the Granian app factory) and passed down explicitly; nothing in
the package reads the environment on its own.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Effective configuration of asr-server. Every field maps to the variable `ASR_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="ASR_",
        extra="ignore",
        validate_default=True,
    )

    # --- network -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address to listen on for HTTP when no Unix socket is given. Loopback by default."""

    port: int = Field(8765, ge=1, le=65535)
    """TCP port to listen on (also the public port of the systemd socket unit)."""

    uds: Path | None = None
    """Listen on this Unix socket instead of host:port (used behind systemd-socket-proxyd)."""

    cors_origins: str = Field("", pattern=r"^\s*(\*|(https?://[\w.\-\[\]:]+/?\s*(,\s*|$))+)?\s*$")
    """Other web origins whose pages may call the API from a browser (comma-separated, e.g.
    `https://app.example.org,http://localhost:5173`, or `*`); empty: only the daemon's own page. Keys
    travel in the Authorization header, never in cookies, so credentialed requests are refused."""

    allowed_hosts: str = Field("", pattern=r"^[\w.\-, ]*$")
    """Host names (comma-separated) a daemon without API keys answers to besides IP addresses and
    `localhost`, e.g. a reverse proxy's `asr.lan`; any other `Host` is refused (DNS rebinding)."""

    # --- storage -------------------------------------------------------------------------
    database_url: SecretStr = SecretStr("postgresql:///asr")
    """PostgreSQL DSN in any form libpq reads: a URI (`postgresql:///asr` is the local socket,
    `?host=DIR` a socket directory) or `key=value` pairs. The only source of truth. Treated as a secret."""

    @field_validator("database_url")
    @classmethod
    def _one_dsn_form(cls, value: SecretStr) -> SecretStr:
        """Normalised to the one URI that asyncpg and libpq's tools read alike (asr_daemon/dsn.py)."""
        from asr_daemon import dsn  # small; kept beside its only use

        return SecretStr(dsn.normalize(value.get_secret_value()))

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis URL (`redis://`, `rediss://`, `unix://`): doorbell, live events and rate limits only; the
    daemon works while it is unreachable. It cannot be turned off: an empty value is refused."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url_form(cls, value: SecretStr) -> SecretStr:
        """A URL redis-py can use, else one line that names what is wrong (never the URL: it may hold a password)."""
        from asr_daemon.urls import redis_url_problem  # small; kept beside its only use

        problem = redis_url_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    state_dir: Path = Path("var/state")
    """Durable state: `uploads/` (audio named by sha256) and `models/` (CTranslate2 models)."""

    log_dir: Path | None = None
    """Where `access.log` goes; None means `<state_dir>/log`."""

    # --- model and device ----------------------------------------------------------------
    model: str = "base"
    """Default model name used when a request names none (or names an OpenAI id like `whisper-1`)."""

    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Inference device: `auto` uses CUDA when a GPU is usable, otherwise the CPU."""

    compute_type: str = "auto"
    """CTranslate2 compute type: `auto` means float16 on CUDA and int8 on CPU."""

    cpu_fallback: bool = True
    """Fall back to the CPU (and retry the job) when CUDA fails at load or run time."""

    cpu_threads: int = Field(0, ge=0)
    """CPU threads per concurrent transcription; 0 splits the cores among `ASR_WORKERS` (at least 1 each)."""

    thread_policy: Literal["replicas", "split", "every-core"] = "replicas"
    """How transcriptions share the CPU cores (CTranslate2 fixes a model's threads when it loads).
    `replicas`: the model is loaded twice, one copy with every core for a transcription that runs alone
    and one with the cores split among `ASR_WORKERS` for transcriptions that overlap (twice the model's
    memory); `split`: one copy, the cores split (a lone request gets only its share); `every-core`: one
    copy, every transcription gets every core (concurrent ones then contend). Ignored on CUDA."""

    workers: int = Field(2, ge=1, le=64)
    """Transcriptions run at once in the process, sharing one loaded model (CTranslate2 num_workers)."""

    run_worker: bool = True
    """Run the job worker in this process. False (`asrctl serve --no-worker`) serves the HTTP API only:
    jobs are queued for `asrctl worker` processes on the same PostgreSQL, no model is loaded here and
    live sessions (`/v1/realtime`) are refused; Wyoming commands are jobs and still served."""

    model_idle_ttl: float = Field(300.0, ge=-1)
    """Seconds an unused model (Whisper's, and the diarization engine's) stays loaded: -1 keeps it, 0 unloads it
    right after each job."""

    preload: bool = False
    """Load the default model at start-up instead of on the first request (the systemd unit sets it:
    the load begins before the app is imported, and overlaps with the imports on a second core)."""

    beam_size: int = Field(5, ge=1, le=20)
    """Beam size used when a request does not ask otherwise (faster-whisper's default is 5)."""

    batch_size: int = Field(8, ge=0, le=64)
    """Chunks decoded at once on audio of at least `ASR_BATCH_MIN_SECONDS` (VAD chunks of ≤ 30 s, decoded
    with timestamps, a chunk's undecoded rest decoded again); 0 transcribes every file sequentially.
    A request's `batch_size` form field overrides it (0 forces the sequential path). Peak memory grows
    with it (tiny.en at 8: about 960 MB against 460 MB sequential), not with the audio's length."""

    batch_min_seconds: float = Field(45.0, ge=0)
    """Shortest audio (in seconds) transcribed batched by default; shorter files run sequentially (under
    30 s there is one chunk: nothing to batch). `base` on 2 quiet cores: batched 8 is 1.15-1.77x faster
    than sequential from 45 s to 300 s (docs/benchmarks.md, section 11)."""

    window_seconds: float = Field(300.0, ge=30)
    """Audio longer than this is decoded and transcribed in windows of this length, keeping memory bounded."""

    # --- jobs ----------------------------------------------------------------------------
    max_upload_bytes: int = Field(1 << 30, ge=1)
    """Largest accepted upload in bytes; refused while streaming once it is exceeded (413)."""

    max_audio_seconds: float = Field(4 * 3600, gt=0)
    """Longest accepted audio duration in seconds (413 beyond it). A live session stores at most this much
    audio: then it is closed (`audio_limit_reached`) and its job completed with what was accepted."""

    max_channels: int = Field(6, ge=1)
    """Most audio channels accepted (6: up to 5.1 surround); more gets 415. Everything is mixed down to
    mono for Whisper, so more channels only cost decoding time; mix such files down before sending."""

    max_sample_rate: int = Field(96000, ge=8000)
    """Highest audio sample rate in Hz accepted; higher gets 415. Whisper hears 16 kHz: everything is
    resampled to it, and a higher rate only costs decoding time."""

    max_tag_bytes: int = Field(1 << 20, ge=0)
    """Most bytes of metadata tags (ID3, Vorbis comments, MP4 atoms: titles, comments, lyrics) a file
    may carry; more gets 413. Cover art is not a tag and does not count; only the upload limit bounds it."""

    max_queued_jobs: int = Field(1000, ge=1)
    """Bound of the queue: new jobs beyond it get 429 with Retry-After."""

    max_attempts: int = Field(3, ge=1)
    """Attempts before a job whose worker died (stale heartbeat) or hit an internal error fails."""

    retry_backoff: float = Field(5.0, ge=0)
    """Seconds before a retried job runs again, doubled at each attempt."""

    heartbeat_interval: float = Field(5.0, gt=0)
    """Seconds between heartbeats of a running job (also how often cancellation is checked)."""

    stale_after: float = Field(30.0, gt=0)
    """A running job whose heartbeat is older than this many seconds is handed back to the queue."""

    poll_interval: float = Field(2.0, gt=0)
    """Seconds between database polls when Redis cannot wake the worker or event streams."""

    dedup: bool = True
    """Join the same key's job with the same audio, model and options (queued, running or completed) instead
    of running the model again."""

    sync_timeout: float = Field(3600.0, gt=0)
    """Longest a synchronous /v1/audio request waits for its job before answering 504 with the job id."""

    audio_retention_days: float = Field(30.0, ge=0)
    """Uploaded audio of finished jobs is deleted after this many days; transcripts stay. 0 keeps it."""

    webhook_secret: SecretStr | None = None
    """HMAC-SHA256 key for the `X-Asr-Signature` header of webhook deliveries; without one, a
    submission with `webhook_url` is refused (400), since every webhook is signed."""

    webhook_attempts: int = Field(5, ge=1)
    """Delivery attempts per webhook, with exponential backoff."""

    webhook_timeout: float = Field(10.0, gt=0)
    """Seconds one webhook delivery may take."""

    # --- lifecycle -----------------------------------------------------------------------
    idle_stop_after: float = Field(900.0, ge=0)
    """Seconds without a request (and with no job queued or running) before the daemon stops by itself
    (the idle watcher exits, and systemd stops the daemon nobody needs); 0 keeps it up."""

    drain_timeout: float = Field(60.0, ge=0)
    """On SIGTERM, seconds a running job may take to finish before it is checkpointed and requeued."""

    start_reason: str = ""
    """Why this process was started (e.g. `socket`, `manual`), shown by /metrics as `asr_start_info`."""

    # --- logging -------------------------------------------------------------------------
    log_level: str = "INFO"
    """Level of the daemon's structured log on stderr."""

    log_transcripts: bool = False
    """Debug only: log each finished job's text (event `job_transcript`). Off: no transcript or audio in any log."""

    # --- models and GPU (issue 4) --------------------------------------------------------
    model_mirror: Path | None = None
    """Download models from this directory (`<org>/<repo>/<files>`) instead of the Hugging Face hub."""

    model_memory_budget_mb: int = Field(0, ge=0)
    """Cap on the memory of all loaded models together, in MB; 0 means what the device has free."""

    model_memory_margin_mb: int = Field(1024, ge=0)
    """Memory (RAM on CPU, VRAM on CUDA) always left free when deciding whether a model fits, in MB."""

    # --- systemd (issue 5) ---------------------------------------------------------------
    watchdog_stall_after: float = Field(300.0, gt=0)
    """Seconds a running job may go without progress (a segment, a claim) before the watchdog pings stop."""

    access_log_max_bytes: int = Field(10 << 20, ge=4096)
    """Size at which `access.log` is rotated (to `access.log.1`, …)."""

    access_log_backups: int = Field(5, ge=0)
    """Rotated access logs kept besides the current one."""

    idle_check_interval: float = Field(30.0, gt=0)
    """Seconds between two looks of `asrctl idle-watch` at the access log, the proxy and the job table."""

    idle_systemctl: str = "systemctl"
    """Command `asrctl idle-watch` runs to ask whether the proxy is active (tests point it at a stand-in)."""

    # --- speaker diarization (issue 19) ---------------------------------------------------
    diarization_engine: Literal["resemblyzer", "pyannote"] = "resemblyzer"
    """Engine for `diarize=true`: `resemblyzer` (offline, CPU, numpy; weights from PyPI via `asrctl models
    pull diarization`) or `pyannote` (pyannote.audio's pipeline from `ASR_PYANNOTE_DIR`; needs the
    pyannote.audio package)."""

    diarization_threshold: float = Field(0.3, gt=0, lt=2)
    """Cosine distance under which the resemblyzer engine joins two groups of speech into one speaker
    (higher: fewer speakers). Ignored when a request gives num_speakers."""

    pyannote_dir: Path | None = None
    """Directory holding pyannote's `speaker-diarization-community-1` pipeline (its config.yaml and
    weights), for `ASR_DIARIZATION_ENGINE=pyannote`; default `<state>/models/diarization/pyannote`."""

    @property
    def uploads_dir(self) -> Path:
        """Directory holding uploaded audio, one file per sha256."""
        return self.state_dir / "uploads"

    @property
    def models_dir(self) -> Path:
        """Directory holding CTranslate2 models, one sub-directory per model name."""
        return self.state_dir / "models"

    @property
    def access_log_path(self) -> Path:
        """The JSON-lines access log the idle watcher reads."""
        return (self.log_dir or self.state_dir / "log") / "access.log"

    def threads_per_worker(self) -> int:
        """CPU threads for one transcription on the shared copy: explicit, every core (`every-core`),
        or the cores split among the workers (`split`, and `replicas`' copy for overlapping jobs).

        Split, two jobs at once gave 1.3-1.6x the throughput of one job with every core on a 2-core
        machine; a lone job on its share was 1.39x slower than with every core on `base` (tiny.en
        1.08x), hence `replicas`. Measured in docs/benchmarks.md, section 10.
        """
        if self.cpu_threads:
            return self.cpu_threads
        if self.thread_policy == "every-core":
            return os.cpu_count() or 1
        return max(1, (os.cpu_count() or 1) // self.workers)

    def solo_threads(self) -> int:
        """Threads of the copy a lone transcription runs on (`replicas`), or 0: no such copy.

        Only worth a second copy when overlapping jobs would get fewer threads than a lone one."""
        cores = os.cpu_count() or 1
        if self.thread_policy != "replicas" or self.workers < 2 or self.threads_per_worker() >= cores:
            return 0
        return cores

    # --- backups (issue 6) -----------------------------------------------------------------
    backup_dir: Path | None = None
    """Where `asrctl backup` writes dumps; None means `<state_dir>/backups`."""

    pg_bindir: Path | None = None
    """Directory holding pg_dump/pg_restore; None picks the newest /usr/lib/postgresql/*/bin, else PATH."""

    backup_keep_daily: int = Field(7, ge=0)
    """Backups kept by `asrctl backup`: the newest of each of this many most recent days with one."""

    backup_keep_weekly: int = Field(4, ge=0)
    """Backups kept by `asrctl backup`: the newest of each of this many most recent ISO weeks with one."""

    @property
    def backups_dir(self) -> Path:
        """Effective backup directory (`backup_dir`, or `<state_dir>/backups`)."""
        return self.backup_dir or self.state_dir / "backups"

    # --- access and limits (issue 8) -----------------------------------------------------
    auth: Literal["auto", "on", "off"] = "auto"
    """API keys: `on` requires one, `off` never asks, `auto` requires one unless `host` is loopback."""

    default_rate: int = Field(600, ge=0)
    """Requests per minute allowed to a key created without `--rate` (0: unlimited)."""

    max_uploads_per_key: int = Field(64, ge=1)
    """Uploads one key (or all anonymous clients together) may stream at once; 429 beyond. One streaming
    upload costs about 0.5-1.2 MB of RAM and two file descriptors (docs/benchmarks.md, section 7)."""

    upload_idle_timeout: float = Field(30.0, gt=0)
    """Seconds an upload may go without sending a byte before it is dropped with 408."""

    upload_timeout: float = Field(3600.0, gt=0)
    """Seconds a whole request body may take to arrive before it is dropped with 408."""

    header_timeout: float = Field(10.0, gt=0)
    """Seconds a client may take to send its request headers before Granian closes the connection."""

    unread_body_drain_bytes: int = Field(64 << 20, ge=0)
    """After answering a request before reading its whole body (a 429, 401, 413, 415), read and drop
    up to this many more bytes of it, so a client still sending gets the answer instead of a reset; 0: never."""

    unread_body_drain_timeout: float = Field(30.0, gt=0)
    """Seconds the rest of an answered request's body may take to be read and dropped (see the bytes above)."""
    # --- Wyoming for Home Assistant (issue 22) ---------------------------------------------
    wyoming_port: int = Field(10300, ge=0, le=65535)
    """TCP port of the Wyoming speech-to-text service (Home Assistant's convention); 0 turns it off."""

    wyoming_host: str = "127.0.0.1"
    """Address the Wyoming service listens on. Wyoming has no authentication: anyone who can reach the
    port can transcribe and fills the archive, so another address (e.g. `0.0.0.0` for a Home Assistant
    box on the LAN) is a deliberate choice; restrict it with a firewall to that host."""

    wyoming_uds: Path | None = None
    """Serve Wyoming on this Unix socket instead of host:port (the systemd unit sets it: asr-wyoming.socket
    holds the TCP port and its proxy forwards here)."""

    wyoming_keep: bool = True
    """Keep Wyoming voice commands like any job (archive, retention). False deletes each command's job and
    audio as soon as its transcript was answered."""

    wyoming_timeout: float = Field(30.0, gt=0)
    """Seconds a Wyoming connection may stay silent (no complete event) before it is closed."""

    wyoming_max_seconds: float = Field(300.0, gt=0)
    """Longest Wyoming voice command accepted, in seconds of audio; longer gets an `error` event."""

    wyoming_max_connections: int = Field(64, ge=1)
    """Wyoming connections served at once (each may buffer up to 4 MiB of one event); one more gets an
    `error` event with code `busy` and is closed. Under systemd the proxy also caps at 64 (its unit)."""
    # --- live transcription over WebSocket (issue 21) --------------------------------------
    live_max_sessions: int = Field(8, ge=0)
    """Live sessions (`/v1/realtime`) open at once in the daemon; 0 turns live transcription off."""

    live_max_sessions_per_key: int = Field(4, ge=1)
    """Live sessions one key (or all anonymous clients together) may hold open at once."""

    live_max_session_s: float = Field(4 * 3600, gt=0)
    """Longest a live session may stay open, in seconds; then it is closed with a reason."""

    live_idle_timeout: float = Field(120.0, gt=0)
    """Seconds a live session may go without receiving audio before it is closed."""

    live_max_append_bytes: int = Field(15 << 20, ge=1024)
    """Largest audio in one `input_audio_buffer.append`, decoded (OpenAI's limit is 15 MiB)."""

    live_max_events_per_s: int = Field(400, ge=1)
    """Client events one live session may send per second (a flood is closed with a reason)."""

    live_max_buffer_s: float = Field(300.0, gt=0)
    """Longest uncommitted audio a manual-commit session may buffer, and longest committed audio waiting
    for its decode before the session reads no more (a client streaming faster than it is transcribed)."""

    live_partial_interval: float = Field(0.2, gt=0)
    """Least seconds of new speech between two re-decodes of the growing utterance (more when they take longer)."""

    live_beam_size: int = Field(5, ge=1, le=20)
    """Beam size of an utterance's final decode (partial re-decodes are greedy: they only need to be fast)."""

    live_secret_ttl: float = Field(600.0, ge=10, le=7200)
    """Default lifetime in seconds of a client secret from `POST /v1/realtime/client_secrets`."""

    live_max_secrets_per_key: int = Field(1000, ge=1)
    """Unexpired client secrets one key (or all anonymous callers together) may hold; one more is
    refused with 429 until one expires (no caller's secret is ever evicted by another's)."""

    @property
    def keys_required(self) -> bool:
        """True when API requests must carry a valid key: `auth=on`, or `auto` and `host` is not loopback.

        Behind the systemd socket proxy (`uds`), `host` names the address the socket unit listens on.
        """
        if self.auth != "auto":
            return self.auth == "on"
        return not _is_loopback(self.host)


def invalid(exc: ValidationError) -> str:
    """One line naming the variable that is wrong, e.g. `invalid ASR_PORT: Input should be a valid integer`."""
    err = exc.errors()[0]
    name = "ASR_" + str(err["loc"][0]).upper() if err.get("loc") else "settings"
    return f"invalid {name}: {str(err['msg']).removeprefix('Value error, ')}"


def _is_loopback(host: str) -> bool:
    """True for a loopback address or `localhost`; False for anything else (0.0.0.0, LAN, names)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
