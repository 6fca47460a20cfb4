"""Devices: which one to use, what it supports, how much memory it has free, and CUDA failures.

ctranslate2 is imported lazily (inside functions), so importing this module is cheap and has no
side effect. GPU facts come from NVML (`nvidia-ml-py`, the `cuda` extra) or `nvidia-smi`, never from
torch (a torch CUDA context costs hundreds of MB of VRAM).

- `resolve_device(wanted)`: "auto" → "cuda" when ctranslate2 sees a GPU, else "cpu".
- `resolve_compute_type(wanted, device)`: "auto" → float16 on CUDA, int8 on CPU; an explicit type
  the device does not support on CPU falls back to int8 (the CPU fallback of a float16 config).
- `is_cuda_failure(exc)`: whether an exception from loading or transcribing is a CUDA/cuBLAS/cuDNN
  failure (or GPU out-of-memory) that the CPU fallback should handle.
- `free_memory(device)`, `rss_bytes()`, `heap_bytes()`, `trim_heap()`: the memory budget's measurements.
- `describe(kind, compute_type)`: what `/readyz` reports as `device` (GPU name and VRAM on CUDA).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

#: Compute types chosen by `auto`.
AUTO_COMPUTE = {"cuda": "float16", "cpu": "int8"}

#: Messages of CUDA failures as CTranslate2 raises them (RuntimeError/ValueError with these texts).
_CUDA_FAILURE = re.compile(
    r"CUDA|cuBLAS|CUBLAS_STATUS|cuDNN|CUDNN|libcublas|libcudnn|libcudart|out of memory|no kernel image"
    r"|GPU|device-side|NVML",
    re.IGNORECASE,
)


class CudaFailure(RuntimeError):
    """A named stand-in for a CUDA error, raised by tests and by `ASR_DEVICE=cuda` without a GPU."""


def is_cuda_failure(exc: BaseException) -> bool:
    """True when `exc` says CUDA, cuBLAS, cuDNN or GPU memory failed (the CPU fallback applies)."""
    if isinstance(exc, CudaFailure):
        return True
    if isinstance(exc, MemoryError):
        return False  # host RAM: falling back to the CPU would not help
    return isinstance(exc, (RuntimeError, ValueError, OSError)) and bool(_CUDA_FAILURE.search(str(exc)))


def nvidia_present() -> bool:
    """Whether an NVIDIA driver is loaded (its /proc entry or a device node): cheap, imports nothing."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def cuda_device_count() -> int:
    """GPUs ctranslate2 can use (0 when the driver or libraries are missing)."""
    try:
        import ctranslate2  # heavy; only where a device is probed

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # noqa: BLE001  # any failure to probe means no usable GPU
        return 0


def supported_compute_types(device: str) -> set[str]:
    """Compute types ctranslate2 supports on `device` ("cuda" or "cpu"); empty when it cannot say."""
    try:
        import ctranslate2

        return set(ctranslate2.get_supported_compute_types(device))
    except Exception:  # noqa: BLE001  # e.g. no CUDA driver
        return set()


def resolve_device(wanted: str) -> str:
    """The concrete device for a setting of auto|cuda|cpu."""
    if wanted == "auto":
        return "cuda" if cuda_device_count() > 0 else "cpu"
    return wanted


def resolve_compute_type(wanted: str, device: str) -> str:
    """The compute type to load with on `device`."""
    if wanted in ("auto", ""):
        return AUTO_COMPUTE.get(device, "default")
    if device == "cpu" and wanted not in supported_compute_types("cpu") | {"default", "auto"}:
        return AUTO_COMPUTE["cpu"]  # e.g. float16 configured for the GPU, now falling back
    return wanted


# --- memory ------------------------------------------------------------------------------


def ram_available() -> int:
    """Bytes of RAM available to new allocations (MemAvailable of /proc/meminfo)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def vram(index: int = 0) -> tuple[int, int] | None:
    """(free, total) bytes of GPU `index` from NVML or nvidia-smi; None when neither can say."""
    try:
        import pynvml  # nvidia-ml-py, the optional `cuda` extra

        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            return int(info.free), int(info.total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001, S110  # no NVML: try nvidia-smi below
        pass
    row = nvidia_smi("memory.free,memory.total", index)
    if row is None:
        return None
    try:
        return int(float(row[0])) << 20, int(float(row[1])) << 20
    except (ValueError, IndexError):
        return None


def free_memory(device: str) -> int | None:
    """Bytes free on `device` right now (VRAM on CUDA, available RAM on CPU); None if unknown."""
    if device == "cuda":
        v = vram()
        return v[0] if v else None
    return ram_available()


@functools.cache  # a GPU's name does not change; /readyz asks on every probe
def gpu_name(index: int = 0) -> str | None:
    """The name of GPU `index` from NVML or nvidia-smi; None when neither can say."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001, S110  # no NVML: try nvidia-smi below
        pass
    row = nvidia_smi("name", index)
    return row[0] if row else None


def describe(kind: str, compute_type: str, index: int = 0) -> dict[str, Any]:
    """The device as the daemon reports it: kind (cuda|cpu), compute type and, on CUDA, the GPU's
    name and VRAM in MiB (`gpu` is None on the CPU or when neither NVML nor nvidia-smi answers)."""
    gpu: dict[str, Any] | None = None
    if kind == "cuda":
        mem = vram(index)
        gpu = {
            "index": index,
            "name": gpu_name(index),
            "memory_total_mib": mem[1] >> 20 if mem else None,
            "memory_free_mib": mem[0] >> 20 if mem else None,
            "memory_used_mib": (mem[1] - mem[0]) >> 20 if mem else None,
        }
    return {"kind": kind, "compute_type": compute_type, "gpu": gpu}


def nvidia_smi(fields: str, index: int = 0) -> list[str] | None:
    """One GPU's values for `nvidia-smi --query-gpu=fields`; None without nvidia-smi or a GPU."""
    rows = nvidia_smi_all(fields, index)
    return rows[0] if rows else None


def nvidia_smi_all(fields: str, index: int | None = None) -> list[list[str]]:
    """Every GPU's values (or one GPU's) for `nvidia-smi --query-gpu=fields`; [] without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    argv = [exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"]
    if index is not None:
        argv.append(f"--id={index}")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[v.strip() for v in line.split(",")] for line in out.splitlines() if line.strip()]


def rss_bytes() -> int:
    """Resident memory of this process in bytes."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * _page_size()


@functools.cache
def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


class _Mallinfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (2.33+): every arena's counts, in bytes."""

    _fields_ = [
        (n, ctypes.c_size_t)
        for n in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def heap_bytes() -> int | None:
    """Bytes malloc has handed out and not taken back, over all arenas (glibc `mallinfo2`); None elsewhere.

    Unlike RSS it grows by what a load allocates even when the allocator reuses pages an earlier
    unload freed but kept (the arenas of CTranslate2's threads, which `malloc_trim` does not shrink).
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    info: _Mallinfo2 = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def trim_heap() -> bool:
    """Give freed heap memory back to the OS (glibc `malloc_trim(0)`); False where unavailable."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    return bool(libc.malloc_trim(0))


def library_loads(soname: str) -> str | None:
    """None when the shared library `soname` loads (dlopen), else the loader's error."""
    try:
        ctypes.CDLL(soname)
    except OSError as exc:
        return str(exc)
    return None
