"""`asrctl status [--json]`: one screen on the daemon, whether it runs or not, without waking it.

Under systemd the daemon is asked only when `asr-server.service` is already active, and only
through its Unix socket (ASR_UDS), never through the public socket-activated port. Without systemd
(a development `asrctl serve`) it is asked on ASR_UDS or ASR_HOST:ASR_PORT. Everything else comes
from systemctl, PostgreSQL, the access log, nvidia-smi and the backup directory.

Exit status: 0, or 1 when PostgreSQL is unreachable or the daemon runs but does not answer (one
error line on stderr after the report).

JSON schema (`--json`): `schema` is 1; fields may be added, none is renamed or removed.

    {
      "schema": 1,
      "checked_at": "ISO-8601",
      "systemd": {"present": bool,
                  "units": {"<unit>": {"loaded": bool, "active": str, "sub": str|null, "since": ISO|null}}},
      "daemon": {"state": "answering"|"not-running"|"not-answering"|"unknown",
                 "via": "unix:<path>"|"http://host:port"|null, "ready": bool|null,
                 "models": [{"id": str, "loaded": bool, "device": str|null, "compute_type": str|null,
                             "memory_bytes": int|null, ...as /v1/models gives}], "error": str|null},
      "device": {"source": "daemon"|"nvidia-smi"|null, "gpus": [{"name": str, "memory_used_mib": int,
                 "memory_free_mib": int, "memory_total_mib": int}]|null,
                 "daemon": {"kind": "cuda"|"cpu", "compute_type": str, "cpu_fallback": bool,
                            "gpu": {"index": int, "name": str|null, "memory_total_mib": int|null,
                                    "memory_free_mib": int|null, "memory_used_mib": int|null}|null}|null},
      "jobs": {"running": int, "queued": int, "oldest_queued_age_s": float|null}|null,
      "database": {"reachable": bool, "size_bytes": int|null, "latest_migration": str|null,
                   "pending_migrations": int|null, "error": str|null},
      "last_request": {"at": ISO|null, "age_s": float|null},
      "idle_stop": {"after_s": float, "in_s": float|null},
      "backups": {"dir": str, "count": int|null, "latest": str|null, "latest_age_s": float|null,
                  "error": str|null}
    }
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import typer
from rich.console import Console
from rich.table import Table

from asr_daemon import db as dbmod
from asr_daemon import queries, urls
from asr_daemon.cli import common
from asr_daemon.config import Settings
from asr_daemon.ops import backup as bk
from asr_daemon.ops import host, migrate

SCHEMA = 1
SERVICE = "asr-server.service"
TIMEOUT = 3.0


def _client(s: Settings, api_key: str | None) -> tuple[httpx.Client, str]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if s.uds is not None:
        transport = httpx.HTTPTransport(uds=str(s.uds))
        client = httpx.Client(transport=transport, base_url="http://asr", timeout=TIMEOUT, headers=headers)
        return client, f"unix:{s.uds}"
    base = urls.daemon_url(s.host, s.port)
    return httpx.Client(base_url=base, timeout=TIMEOUT, headers=headers), base


def daemon_report(s: Settings, systemd: bool, api_key: str | None) -> dict[str, Any]:
    """Ask the daemon for readiness and models, if that cannot wake it."""
    out: dict[str, Any] = {"state": "unknown", "via": None, "ready": None, "models": [], "error": None, "device": None}
    if systemd:
        if not host.unit_active(SERVICE):
            out["state"] = "not-running"
            return out
        if s.uds is None:
            out["error"] = "ASR_UDS is not set: not asking through the public socket"
            return out
    client, out["via"] = _client(s, api_key)
    with client:
        try:
            ready = client.get("/readyz")
        except httpx.TransportError as exc:
            out["state"] = "not-answering" if systemd else "not-running"
            out["error"] = type(exc).__name__
            return out
        out["state"] = "answering"
        out["ready"] = ready.status_code == 200
        body = _json(ready)
        if isinstance(body, dict) and isinstance(body.get("device"), dict):
            out["device"] = body["device"]
        try:
            models = client.get("/v1/models")
            data = _json(models) if models.status_code == 200 else None
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                out["models"] = [m for m in data["data"] if isinstance(m, dict)]
            elif models.status_code != 200:
                out["error"] = f"/v1/models answered {models.status_code}"
        except httpx.TransportError as exc:
            out["error"] = f"/v1/models: {type(exc).__name__}"
    return out


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def database_report(s: Settings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Size and migrations of the database, and the queue counts (None when unreachable)."""
    out: dict[str, Any] = {
        "reachable": False,
        "size_bytes": None,
        "latest_migration": None,
        "pending_migrations": None,
        "error": None,
    }
    try:
        conn = await dbmod.connect(s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        out["error"] = dbmod.connect_error(s.database_url.get_secret_value(), exc)
        return out, None
    try:
        applied = await migrate.applied(conn)
        out.update(
            reachable=True,
            size_bytes=await conn.fetchval("SELECT pg_database_size(current_database())"),
            latest_migration=applied[max(applied)] if applied else None,
            pending_migrations=len(await migrate.pending(conn)),
        )
        stats = await queries.queue_stats(conn) if applied else None
        queue = None
        if stats is not None:
            queue = {"running": stats.running, "queued": stats.queued, "oldest_queued_age_s": stats.oldest_queued_s}
        return out, queue
    except (OSError, asyncpg.PostgresError) as exc:
        out["error"] = f"PostgreSQL (ASR_DATABASE_URL): {exc}"
        return out, None
    finally:
        await conn.close()


def with_service_paths(s: Settings, service_env: dict[str, str]) -> Settings:
    """Settings completed with the daemon unit's socket, state and log paths (set by `Environment=`
    in asr-server.service), for what this shell's environment does not set itself."""
    update: dict[str, Any] = {}
    for field in ("uds", "state_dir", "log_dir"):
        name = "ASR_" + field.upper()
        if name not in os.environ and service_env.get(name):
            update[field] = Path(service_env[name])
    return s.model_copy(update=update) if update else s


def collect(s: Settings, api_key: str | None = None) -> dict[str, Any]:
    """The whole report (see the module docstring for its schema)."""
    now = datetime.now(UTC)
    systemd = host.systemd_present()
    if systemd:
        s = with_service_paths(s, host.service_environment(SERVICE))
    units = {u: host.unit_state(u) for u in host.UNITS} if systemd else {}
    daemon = daemon_report(s, systemd, api_key)
    daemon_device = daemon.pop("device")
    gpus = host.gpus()
    device = {
        "source": "daemon" if daemon_device else ("nvidia-smi" if gpus else None),
        "gpus": gpus,
        "daemon": daemon_device,
    }
    database, queue = common.run(database_report(s))
    last = host.last_request(s.access_log_path)
    age = (now - last).total_seconds() if last else None
    idle_in = None
    idle_applies = daemon["state"] == "answering" and s.idle_stop_after > 0 and age is not None
    if idle_applies and queue is not None and not (queue["running"] or queue["queued"]):
        idle_in = max(0.0, s.idle_stop_after - float(age or 0))
    backups_error = None
    try:
        backups = bk.list_backups(s.backups_dir)
    except OSError as exc:  # not "none": the directory cannot be read (permissions)
        backups, backups_error = [], exc.strerror or str(exc)
    return {
        "schema": SCHEMA,
        "checked_at": now.isoformat(),
        "systemd": {"present": systemd, "units": units},
        "daemon": daemon,
        "device": device,
        "jobs": queue,
        "database": database,
        "last_request": {"at": last.isoformat() if last else None, "age_s": age},
        "idle_stop": {"after_s": s.idle_stop_after, "in_s": idle_in},
        "backups": {
            "dir": str(s.backups_dir),
            "count": None if backups_error else len(backups),
            "latest": str(backups[0].path) if backups else None,
            "latest_age_s": (now - backups[0].taken_at).total_seconds() if backups else None,
            "error": backups_error,
        },
    }


def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (schema: docs/operations.md).")
    ] = False,
    api_key: Annotated[
        str | None, typer.Option(envvar="ASR_API_KEY", help="Key for the daemon's API, if it needs one.")
    ] = None,
) -> None:
    """Daemon, units, device, queue, database, last request, idle stop and backups on one screen."""
    s = common.settings()
    report = collect(s, api_key)
    if as_json:
        common.print_json(report)
    else:
        Console().print(render(report))
    if not report["database"]["reachable"]:
        common.fail(report["database"]["error"])
    if report["daemon"]["state"] == "not-answering":
        common.fail(f"asr-server.service is active but does not answer on {report['daemon']['via']}")


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else common.human_age(seconds) + " ago"


def _mib(n: Any) -> str:
    return f"{n} MiB" if isinstance(n, int) else "? MiB"


def _model(m: dict[str, Any]) -> str:
    """`tiny.en (cpu int8, 78.0 MiB in memory)`: a loaded model, its device and the memory it took at
    load (`models ls` says what it takes on disk, in the same binary units)."""
    mem = m.get("memory_bytes")
    size = f"{common.human_size(mem)} in memory" if isinstance(mem, int) else "memory unknown"
    return f"{m.get('id')} ({m.get('device')} {m.get('compute_type')}, {size})"


def _device(dev: dict[str, Any]) -> str:
    """The daemon's device (kind, compute type, GPU VRAM) when it answered, else nvidia-smi's GPUs."""
    gpus = "; ".join(
        f"{g['name']}: {g['memory_used_mib']} MiB used, {g['memory_free_mib']} MiB free" for g in dev["gpus"] or []
    )
    d = dev["daemon"]
    if not d:
        return gpus or "no NVIDIA GPU visible (CPU)"
    line = f"{d.get('kind')} {d.get('compute_type')}" + (" (after a CUDA failure)" if d.get("cpu_fallback") else "")
    g = d.get("gpu")
    if isinstance(g, dict):
        used, free = _mib(g.get("memory_used_mib")), _mib(g.get("memory_free_mib"))
        line += f", {g.get('name') or 'GPU ' + str(g.get('index'))}: {used} used, {free} free"
    elif gpus:
        line += f"; GPUs: {gpus}"
    return line


def render(r: dict[str, Any]) -> Table:
    """The report as a two-column table for people."""
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for unit, u in r["systemd"]["units"].items():
        since = f" since {u['since'][:19].replace('T', ' ')}" if u["since"] else ""
        t.add_row(unit, f"{u['active']} ({u['sub']}){since}" if u["loaded"] else "not installed")
    if not r["systemd"]["present"]:
        t.add_row("systemd", "not present (development host)")
    d = r["daemon"]
    colors = {"answering": "green", "not-running": "dim", "not-answering": "bold red"}
    color = colors.get(d["state"], "yellow")
    via = f" via {d['via']}" if d["via"] else ""
    ready = "" if d["ready"] is None else (", ready" if d["ready"] else ", [yellow]not ready[/]")
    t.add_row("daemon", f"[{color}]{d['state']}[/]{via}{ready}" + (f" ({d['error']})" if d["error"] else ""))
    loaded = [m for m in d["models"] if m.get("loaded")]
    if d["state"] == "answering":
        t.add_row("models", ", ".join(_model(m) for m in loaded) if loaded else "none loaded")
    t.add_row("device", _device(r["device"]))
    q = r["jobs"]
    if q is None:
        t.add_row("jobs", "-")
    else:
        oldest = q["oldest_queued_age_s"]
        t.add_row(
            "jobs",
            f"{q['running']} running, {q['queued']} queued"
            + (f", oldest queued {_age(oldest)}" if oldest is not None else ""),
        )
    t.add_row("last request", _age(r["last_request"]["age_s"]))
    idle = r["idle_stop"]["in_s"]
    t.add_row("idle stop", "-" if idle is None else f"in {common.human_age(idle)}")
    db = r["database"]
    t.add_row(
        "database",
        f"{common.human_size(db['size_bytes'])}, migration {db['latest_migration']}, {db['pending_migrations']} pending"
        if db["reachable"]
        else "[bold red]unreachable[/]",
    )
    b = r["backups"]
    if b["error"]:
        t.add_row("last backup", f"[bold red]cannot read {b['dir']}[/]: {b['error']}")
    else:
        found = f"{_age(b['latest_age_s'])} ({b['count']} in {b['dir']})"
        t.add_row("last backup", found if b["latest"] else f"[yellow]none[/] in {b['dir']}")
    return t
