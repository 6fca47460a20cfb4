"""On a CUDA GPU: large-v3-turbo in float16 and int8_float16 loads, transcribes (beam 5 with word
timestamps, the case that broke int8 on sm_120) and gives its VRAM back on unload. Skipped without a
GPU. Figures (load time, realtime factor, VRAM before / loaded / after unload, measured after a first
load created the CUDA context) are printed and, with GPU_FIGURES=path, appended there as JSON lines.
GPU_TEST_MODEL picks another local model (e.g. base, where the hub is unreachable)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from asr_daemon.config import Settings
from asr_daemon.engine import device, models, store

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(device.cuda_device_count() == 0, reason="needs a CUDA GPU visible to ctranslate2"),
]

# Not ASR_* variables: tests/conftest.py clears those for isolation.
MODEL = os.environ.get("GPU_TEST_MODEL", "large-v3-turbo")
ROOT = Path(__file__).resolve().parents[2]
STORES = [
    Path(os.environ.get("GPU_TEST_MODELS_DIR", ROOT / "var" / "state" / "models")),
    ROOT / "var" / "test-cache" / "models",
]
TEXT = (
    "And so, my fellow Americans, ask not what your country can do for you; "
    "ask what you can do for your country. The quick brown fox jumps over the lazy dog."
)


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The GPU test model from var/state/models (pull it first: `asrctl models pull large-v3-turbo`)."""
    path = next((p for p in (store.local_path(d, MODEL) for d in STORES) if p), None)
    if path is None:
        pytest.skip(f"{MODEL} is not in {STORES[0]}: run `asrctl models pull {MODEL}`")
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of espeak-ng speech, 16 kHz mono."""
    d = tmp_path_factory.mktemp("gpu")
    wav = d / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), TEXT], check=True)
    out = d / "speech.flac"
    subprocess.run(["sox", str(wav), "-R", "-r", "16000", "-c", "1", str(out)], check=True)
    return out


def _vram_used() -> int:
    v = device.vram()
    assert v is not None, "no NVML/nvidia-smi to read VRAM"
    return v[1] - v[0]


@pytest.fixture(scope="module")
def cuda_context_mb(model_path: Path) -> int:
    """Create this process's CUDA context with a first load and unload; returns what it keeps (MB)."""
    before = _vram_used()
    cache = models.cache_from_settings(Settings(device="cuda", compute_type="float16", cpu_fallback=False))

    async def warm() -> None:
        cache.release(await cache.acquire(MODEL, model_path))
        assert cache.unload(MODEL)

    asyncio.run(warm())
    kept = (_vram_used() - before) >> 20
    print(json.dumps({"cuda_context_kept_after_unload_mb": kept}))
    return kept


@pytest.mark.parametrize("compute_type", ["float16", "int8_float16"])
def test_large_v3_turbo_on_cuda(model_path: Path, speech: Path, compute_type: str, cuda_context_mb: int) -> None:
    """Load, transcribe with beam 5 and word timestamps, unload: the text is right and VRAM comes back."""
    assert compute_type in device.supported_compute_types("cuda")
    settings = Settings(device="cuda", compute_type=compute_type, model_idle_ttl=-1, cpu_fallback=False)
    cache = models.cache_from_settings(settings)

    async def go() -> dict[str, float | str]:
        before = _vram_used()
        t0 = time.perf_counter()
        entry = await cache.acquire(MODEL, model_path)
        load_s = time.perf_counter() - t0
        loaded = _vram_used()
        t1 = time.perf_counter()
        segments, info = entry.model.transcribe(str(speech), language="en", beam_size=5, word_timestamps=True)
        text = "".join(s.text for s in segments)
        took = time.perf_counter() - t1
        cache.release(entry)
        assert cache.unload(MODEL)
        await asyncio.sleep(0.5)
        after = _vram_used()
        assert entry.device == "cuda" and entry.compute_type == compute_type
        assert "country" in text.lower() and "fox" in text.lower(), text
        return {
            "model": MODEL, "compute_type": compute_type, "load_s": round(load_s, 2),
            "audio_s": round(info.duration, 2), "transcribe_s": round(took, 3),
            "x_realtime": round(info.duration / took, 1), "vram_before_mb": before >> 20,
            "vram_loaded_mb": loaded >> 20, "vram_after_unload_mb": after >> 20,
        }  # fmt: skip

    figures = asyncio.run(go())
    print(json.dumps(figures))
    if os.environ.get("GPU_FIGURES"):
        with open(os.environ["GPU_FIGURES"], "a") as f:
            f.write(json.dumps(figures) + "\n")
    grew = float(figures["vram_loaded_mb"]) - float(figures["vram_before_mb"])
    weights_mb = (model_path / "model.bin").stat().st_size >> 20
    assert grew > 0.3 * weights_mb, "the model did not land in VRAM"
    assert float(figures["vram_after_unload_mb"]) < float(figures["vram_before_mb"]) + 0.25 * grew + 64
