"""Device policy without a model: which errors count as CUDA failures, and the compute type chosen."""

from __future__ import annotations

import pytest

from asr_daemon.engine import device


@pytest.mark.parametrize(
    "message",
    [
        "CUDA failed with error out of memory",
        "cuBLAS failed with status CUBLAS_STATUS_NOT_SUPPORTED",
        "Library libcublas.so.12 is not found or cannot be loaded",
        "Unable to load any of {libcudnn_ops.so.9.1.0, libcudnn_ops.so.9.1, libcudnn_ops.so.9}",
        "CUDA failed with error CUDA driver version is insufficient for CUDA runtime version",
        "CUDA failed with error no kernel image is available for execution on the device",
    ],
)
def test_ctranslate2_cuda_errors_are_cuda_failures(message: str) -> None:
    """The errors CTranslate2 raises for a broken GPU stack trigger the CPU fallback."""
    assert device.is_cuda_failure(RuntimeError(message))


@pytest.mark.parametrize(
    "exc",
    [ValueError("Invalid input features shape"), MemoryError(), KeyError("cuda"), RuntimeError("bad audio")],
)
def test_other_errors_are_not_cuda_failures(exc: BaseException) -> None:
    """Bad input, host out-of-memory and programming errors do not send the job to the CPU."""
    assert not device.is_cuda_failure(exc)


def test_auto_compute_type_is_float16_on_cuda_and_int8_on_cpu() -> None:
    """`auto` means float16 on CUDA (the tested default on sm_120) and int8 on the CPU."""
    assert device.resolve_compute_type("auto", "cuda") == "float16"
    assert device.resolve_compute_type("auto", "cpu") == "int8"


def test_gpu_only_compute_type_becomes_int8_on_cpu_fallback() -> None:
    """A float16 configuration falling back to the CPU loads int8, which the CPU supports."""
    assert device.resolve_compute_type("float16", "cpu") == "int8"
    assert device.resolve_compute_type("int8_float16", "cpu") == "int8"
    assert device.resolve_compute_type("int8_float32", "cpu") == "int8_float32"
    assert device.resolve_compute_type("int8_float16", "cuda") == "int8_float16"


def test_cpu_device_never_probes_and_auto_follows_ctranslate2() -> None:
    """`cpu` stays the CPU; `auto` is CUDA exactly when ctranslate2 sees a GPU."""
    assert device.resolve_device("cpu") == "cpu"
    assert device.resolve_device("auto") == ("cuda" if device.cuda_device_count() else "cpu")


def test_memory_probes_read_this_process_and_host() -> None:
    """RSS and MemAvailable are real, plausible numbers; trim_heap works on glibc."""
    assert 10 << 20 < device.rss_bytes() < device.ram_available() + device.rss_bytes()
    assert device.free_memory("cpu") == pytest.approx(device.ram_available(), rel=0.2)
    device.trim_heap()


def test_heap_probe_counts_what_is_held_not_what_is_resident() -> None:
    """`heap_bytes` grows by a held 64 MiB buffer and shrinks when it is freed (glibc's mallinfo2)."""
    before = device.heap_bytes()
    assert before is not None, "glibc without mallinfo2 (< 2.33)?"
    buf = bytearray(64 << 20)
    held = device.heap_bytes()
    del buf
    after = device.heap_bytes()
    assert held is not None and after is not None
    assert held - before >= 64 << 20
    assert held - after >= 64 << 20
