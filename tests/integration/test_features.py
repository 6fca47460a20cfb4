"""The sliced log-Mel extractor: faster-whisper's features bit for bit, at a fraction of the memory."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from asr_daemon.engine import audio, features, replicas

#: Lengths around the slice boundaries, a 30 s chunk, a lone frame's remainder, and two minutes.
LENGTHS = [1_000, 16_000, 480_000, 480_000 * 2 + 77, 4096 * 160, 4097 * 160, 8193 * 160 + 3, 16_000 * 125]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_features_equal_faster_whisper_bit_for_bit(n_mels: int, speech: Callable[..., Path]) -> None:
    """For speech and noise of many lengths, the sliced features are exactly the library's."""
    voice = audio.decode(speech("Features must not change a single bit of what Whisper sees.", repeat=16))
    noise = (np.random.default_rng(7).standard_normal(max(LENGTHS)) * 0.1).astype(np.float32)
    signal = np.concatenate([voice, noise])
    ours, theirs = features.SlicedFeatureExtractor(feature_size=n_mels), FeatureExtractor(feature_size=n_mels)
    for n in LENGTHS:
        for start in (0, len(signal) - n):
            x = signal[start : start + n]
            a, b = ours(x), theirs(x)
            assert a.shape == b.shape and a.dtype == b.dtype, n
            assert np.array_equal(a, b), f"{n} samples from {start}: max diff {np.abs(a - b).max()}"
    assert np.array_equal(ours(voice[:480_000], chunk_length=30), theirs(voice[:480_000], chunk_length=30))
    assert ours.nb_max_frames == theirs.nb_max_frames


#: Peak of the memory numpy allocates during the call (tracemalloc sees numpy's buffers): unlike the
#: process's ru_maxrss, not hidden by whatever peak the imports reached first (a full suite's run once
#: read 0 MB for both sides that way).
PEAK = """
import sys, tracemalloc, numpy as np
from faster_whisper.feature_extractor import FeatureExtractor
from asr_daemon.engine.features import SlicedFeatureExtractor
x = (np.random.default_rng(1).standard_normal(16000 * 600) * 0.1).astype(np.float32)
tracemalloc.start()
(SlicedFeatureExtractor if sys.argv[1] == "sliced" else FeatureExtractor)()(x)
print(tracemalloc.get_traced_memory()[1] // (1 << 20))
"""


def test_ten_minutes_of_features_need_a_fraction_of_the_librarys_peak_memory() -> None:
    """Features of a 10-minute window add less than half the library's peak memory (each in a fresh process)."""
    peak = {
        kind: int(subprocess.run([sys.executable, "-c", PEAK, kind], capture_output=True, text=True, check=True).stdout)
        for kind in ("sliced", "library")
    }
    assert peak["sliced"] < peak["library"] / 2, peak


def test_loaded_models_use_the_sliced_extractor(models_dir: Path) -> None:
    """`load_model` installs the sliced extractor with the model's own feature settings."""
    model = replicas.load_model(models_dir / "tiny.en", "cpu", "int8", 1, 1)
    assert isinstance(model.feature_extractor, features.SlicedFeatureExtractor)
    assert model.feature_extractor.mel_filters.shape == (model.model.n_mels, 201)
