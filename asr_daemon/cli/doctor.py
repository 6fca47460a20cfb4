"""`asrctl doctor`: one screen that says what works on this host, and what to do about what does not.

GPU and driver (nvidia-smi), ctranslate2 and its compute types, cuBLAS/cuDNN loadability, torch's
view when installed, PostgreSQL and Redis reachability, free disk in the state directory, the
default model, the diarization engine (loadable or not, without loading it), and a one-second smoke
transcription on each usable device. Known fixes are named beside the failures they fix. Exit code 0
only when the configured device (`ASR_DEVICE`) works.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer

from asr_daemon.cli import common
from asr_daemon.config import Settings
from asr_daemon.engine import device, modelchoice, replicas, store

OK, BAD, INFO = "ok", "fail", "info"
SMOKE_MODELS = ("tiny.en", "tiny", "base.en", "base")


@dataclass
class Report:
    """Checks in the order they ran, and the fixes they call for."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (state, label, detail)
    fixes: list[str] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)

    def add(self, state: str, label: str, detail: str) -> None:
        """Record one check."""
        self.rows.append((state, label, detail))


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def check_gpu(r: Report) -> None:
    """Driver, CUDA version, GPU name, compute capability and free memory from nvidia-smi."""
    row = device.nvidia_smi("name,driver_version,compute_cap,memory.free,memory.total")
    if row is None:
        r.add(INFO, "GPU", "no NVIDIA GPU or driver found (nvidia-smi absent or failing): CPU-only host")
        r.facts["gpu"] = None
        return
    name, driver, cc, free, total = (row + [""] * 5)[:5]
    cuda = ""
    try:
        head = subprocess.run(["nvidia-smi"], check=False, capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"CUDA Version:\s*([\d.]+)", head)
        cuda = m.group(1) if m else ""
    except (OSError, subprocess.SubprocessError):
        pass
    r.facts.update(gpu=name, driver=driver, cuda=cuda, compute_capability=cc)
    r.add(OK, "GPU", f"{name}, compute capability {cc}, {free} MiB free of {total} MiB")
    r.add(OK, "driver", f"{driver}, CUDA {cuda or '?'} (driver API)")
    if driver and _version_tuple(driver) < (570,):
        r.fixes.append("NVIDIA driver < 570 cannot run CUDA 12.8 code (needed for Blackwell): update the driver")


def check_ctranslate2(r: Report) -> None:
    """ctranslate2's version, the GPUs it sees and its compute types on cuda and cpu."""
    try:
        import ctranslate2
    except ImportError as exc:
        r.add(BAD, "ctranslate2", f"not importable: {exc}")
        return
    version = str(ctranslate2.__version__)
    count = device.cuda_device_count()
    r.facts.update(ctranslate2=version, cuda_devices=count)
    r.add(OK, "ctranslate2", f"{version}; sees {count} CUDA device(s)")
    r.add(INFO, "compute types cpu", ", ".join(sorted(device.supported_compute_types("cpu"))) or "?")
    cuda_types = sorted(device.supported_compute_types("cuda")) if count else []
    r.add(INFO, "compute types cuda", ", ".join(cuda_types) or "none (no usable GPU)")
    r.fixes.extend(blackwell_fixes(str(r.facts.get("compute_capability") or ""), version, None))
    if r.facts.get("gpu") and count == 0:
        r.fixes.append(
            "a GPU is present but ctranslate2 sees none: the driver must support CUDA 12.8 (>= 570) and the"
            " userspace must be CUDA 12 (a CUDA-13-only stack gives 0 devices, CTranslate2 #1933)"
        )


def blackwell_fixes(compute_capability: str, ctranslate2_version: str, torch_arches: list[str] | None) -> list[str]:
    """What a Blackwell GPU (sm_120, e.g. RTX 5060 Ti) needs that older wheels lack; empty elsewhere.

    CTranslate2 4.6.2/4.6.3 disabled int8 on compute capability 12.0 and older builds fail it with
    CUBLAS_STATUS_NOT_SUPPORTED; 4.7.0 pads int8 GEMMs to multiples of 16 and enables it again
    (CTranslate2 #1937, #1981, #1982). torch (the `cuda` extra, used only by this report and for
    cuBLAS) needs a CUDA 12.8 build whose kernels include sm_120."""
    if not compute_capability.startswith("12"):
        return []
    fixes = []
    if _version_tuple(ctranslate2_version) < (4, 7):
        fixes.append(
            f"ctranslate2 {ctranslate2_version} on a Blackwell GPU (sm_120): int8 fails or is disabled"
            " (CUBLAS_STATUS_NOT_SUPPORTED; fixed in 4.7.0 by CTranslate2 #1982, 4.6.2/4.6.3 disable it, #1981):"
            " `uv sync` to get ctranslate2>=4.7, or set ASR_COMPUTE_TYPE=float16"
        )
    if torch_arches is not None and "sm_120" not in torch_arches:
        fixes.append(
            "torch has no sm_120 kernels (built for " + (", ".join(torch_arches) or "no GPU") + "): install a"
            " CUDA 12.8 build (`uv sync --extra cuda` gets torch>=2.7 with cu128 wheels) for this Blackwell GPU"
        )
    return fixes


def check_libraries(r: Report) -> None:
    """Whether cuBLAS (and cuDNN, needed only by ctranslate2 < 4.6.3) load."""
    gpu = bool(r.facts.get("gpu"))
    for soname in ("libcublas.so.12", "libcublasLt.so.12"):
        err = device.library_loads(soname)
        r.add(OK if err is None else (BAD if gpu else INFO), soname, "loads" if err is None else err[:120])
        if err is not None and gpu:
            r.fixes.append(
                f"{soname} missing: `uv sync --extra cuda` (nvidia-cublas-cu12>=12.8) and put its lib"
                " directory on LD_LIBRARY_PATH in /etc/asr/asr.env (set before Python starts;"
                " os.environ is too late)"
            )
    err = device.library_loads("libcudnn_ops.so.9")
    old = _version_tuple(str(r.facts.get("ctranslate2", "0"))) < (4, 6, 3)
    r.add(
        OK if err is None else INFO,
        "libcudnn_ops.so.9",
        "loads" if err is None else "absent (not needed by ctranslate2 >= 4.6.3)",
    )
    if err is not None and old and gpu:
        r.fixes.append("`libcudnn_ops.so.9` missing with ctranslate2 < 4.6.3: upgrade ctranslate2 (no cuDNN needed)")


def check_torch(r: Report) -> None:
    """torch's view of CUDA, only when the `cuda` extra installed it."""
    if importlib.util.find_spec("torch") is None:
        r.add(INFO, "torch", "not installed (optional `cuda` extra)")
        return
    try:
        import torch

        avail = bool(torch.cuda.is_available())
        arches = list(torch.cuda.get_arch_list()) if avail else []
        r.add(
            INFO,
            "torch",
            f"{torch.__version__}, built for CUDA {torch.version.cuda}, cuda available: {avail}"
            + (f", kernels {' '.join(arches)}" if arches else ""),
        )
        if avail:
            cc, version = str(r.facts.get("compute_capability") or ""), str(r.facts.get("ctranslate2", "99"))
            r.fixes.extend(f for f in blackwell_fixes(cc, version, arches) if f.startswith("torch"))
    except Exception as exc:  # noqa: BLE001  # a broken torch is reported, not fatal
        r.add(INFO, "torch", f"import failed: {exc}")


async def _ping_services(s: Settings) -> tuple[str | None, str | None]:
    import asyncpg
    import redis.asyncio as aioredis

    from asr_daemon import db

    pg: str | None = None
    try:
        conn = await db.connect_url(s.database_url.get_secret_value(), timeout=3)
        await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:  # what was tried and the likely fix
        pg = db.connect_error(s.database_url.get_secret_value(), exc)
    except Exception as exc:  # noqa: BLE001  # any failure is the answer
        pg = f"{type(exc).__name__}: {exc}"[:160]
    rd: str | None = None
    try:
        client = aioredis.from_url(s.redis_url.get_secret_value(), socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:  # a URL redis-py cannot read: unusable, like an unreachable server
        return pg, f"ASR_REDIS_URL unusable: {exc}"[:160]
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001
        rd = f"{type(exc).__name__}: {exc}"[:160]
    finally:
        await client.aclose()
    return pg, rd


def check_services(r: Report, s: Settings) -> None:
    """PostgreSQL (needed) and Redis (optional) reachability."""
    pg, rd = asyncio.run(_ping_services(s))
    r.add(OK if pg is None else BAD, "PostgreSQL", "reachable" if pg is None else pg)
    r.add(
        OK if rd is None else INFO,
        "Redis",
        "reachable" if rd is None else f"{rd} (the daemon works without it)",
    )
    if pg is not None:
        r.fixes.append("PostgreSQL unreachable: check ASR_DATABASE_URL, or `make services` on a development host")


def check_disk(r: Report, s: Settings) -> None:
    """Free space where uploads and models live."""
    where = s.state_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    r.add(OK if free > 2 << 30 else BAD, "disk", f"{free / 2**30:.1f} GiB free in {s.state_dir}")


def check_diarization(r: Report, s: Settings) -> None:
    """Whether the configured diarization engine can load (issue 19), checked without loading it."""
    from asr_daemon import diarization
    from asr_daemon.diarization.engine import Unavailable

    try:
        r.add(OK, "diarization", diarization.status(s))
    except Unavailable as exc:
        fallback = " (the offline engine serves instead)" if s.diarization_engine == "pyannote" else ""
        r.add(BAD, "diarization", f"{s.diarization_engine}: {exc}{fallback}")
        r.fixes.append(f"diarization: {exc}")


def smoke(path: Path, dev: str, compute_type: str) -> str:
    """Load the model on `dev` and transcribe one second of a tone; a short summary (raises on failure)."""
    import numpy as np

    t0 = time.perf_counter()
    model = replicas.load_model(path, dev, device.resolve_compute_type(compute_type, dev), 1, 1)
    t1 = time.perf_counter()
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    segments, _ = model.transcribe(tone, language="en", beam_size=1)
    list(segments)
    return f"load {t1 - t0:.2f} s, 1 s of audio in {time.perf_counter() - t1:.2f} s"


def check_smoke(r: Report, s: Settings) -> dict[str, bool]:
    """A one-second transcription on each usable device; which devices work."""
    default = store.status(s.models_dir, s.model)
    r.add(
        OK if default.present else BAD,
        f"model {s.model}",
        default.checksum if default.present else f"absent: `asrctl models ensure` (or `asrctl models pull {s.model}`)",
    )
    if r.facts.get("cuda_devices") and "model" not in s.model_fields_set:
        gpu = store.local_path(s.models_dir, modelchoice.GPU_DEFAULT)
        r.add(
            OK if gpu else INFO,
            "GPU default model",
            f"{modelchoice.GPU_DEFAULT} is used on CUDA (ASR_MODEL unset)"
            if gpu
            else f"{modelchoice.GPU_DEFAULT} absent, {s.model} is used: `asrctl models pull {modelchoice.GPU_DEFAULT}`",
        )
    name = next((n for n in (*SMOKE_MODELS, s.model) if store.local_path(s.models_dir, n)), None)
    works: dict[str, bool] = {}
    devices = ["cuda", "cpu"] if r.facts.get("cuda_devices") else ["cpu"]
    if name is None:
        r.add(BAD, "smoke test", "no model to test with: `asrctl models ensure`")
        return {d: False for d in devices}
    path = store.local_path(s.models_dir, name)
    assert path is not None
    for dev in devices:
        try:
            r.add(OK, f"smoke {dev}", f"{name}: {smoke(path, dev, s.compute_type)}")
            works[dev] = True
        except Exception as exc:  # noqa: BLE001  # the failure is the finding
            r.add(BAD, f"smoke {dev}", f"{name}: {str(exc)[:200]}")
            works[dev] = False
            if device.is_cuda_failure(exc) and "int8" in s.compute_type:
                r.fixes.append("int8 on this GPU failed: set ASR_COMPUTE_TYPE=float16 (the tested default on sm_120)")
    return works


def doctor(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Check the GPU stack, services, disk and models; exit 0 only when the configured device works."""
    s = common.settings()
    r = Report()
    for check in (check_gpu, check_ctranslate2, check_libraries, check_torch):
        check(r)
    check_services(r, s)
    check_disk(r, s)
    check_diarization(r, s)
    works = check_smoke(r, s)
    wanted = device.resolve_device(s.device)
    ok = works.get(wanted, False)
    if s.device == "cuda" and not r.facts.get("cuda_devices"):
        r.fixes.append("ASR_DEVICE=cuda but no usable GPU: set ASR_DEVICE=auto (or cpu), or fix the GPU stack above")
    verdict = f"configured device {s.device} ({wanted}): {'works' if ok else 'DOES NOT WORK'}"
    if as_json:
        common.print_json(
            {
                "ok": ok,
                "device": s.device,
                "resolved_device": wanted,
                "facts": r.facts,
                "checks": [{"state": a, "check": b, "detail": c} for a, b, c in r.rows],
                "fixes": r.fixes,
            }
        )
    else:
        mark = {OK: "✔", BAD: "✘", INFO: "·"}
        for state, label, detail in r.rows:
            typer.echo(f" {mark[state]} {label:<20} {detail}")
        for fix in r.fixes:
            typer.echo(f" → fix: {fix}")
        typer.echo(verdict)
    raise typer.Exit(0 if ok else 1)
