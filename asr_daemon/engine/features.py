"""Whisper's log-Mel features, computed a slice at a time so a long window needs little memory.

faster-whisper's `FeatureExtractor` turns a whole window into one STFT: for 10 minutes of audio
that is ~350 MB of frames and spectra at once, most of the transcription's peak memory. This
subclass frames the same padded signal and runs the FFT and the Mel projection a slice of frames at
a time, so the peak is one slice's spectra plus the features themselves. The result is bit-for-bit
faster-whisper's (a test holds it to that): each frame's FFT is computed the same way, and the Mel
projection is one matrix product per slice with slices a multiple of 4096 frames wide, which BLAS
computes column for column as it computes the whole product.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

#: Frames per slice (about 41 s of audio). A multiple of every BLAS kernel's column blocking.
SLICE_FRAMES = 4096


class SlicedFeatureExtractor(FeatureExtractor):  # type: ignore[misc]  # faster-whisper ships no type hints
    """A drop-in `FeatureExtractor` whose peak memory does not grow with the audio's STFT."""

    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> np.ndarray:
        """The log-Mel spectrogram of `waveform`, exactly as `FeatureExtractor.__call__` computes it."""
        if chunk_length is not None:
            self.n_samples = chunk_length * self.sampling_rate
            self.nb_max_frames = self.n_samples // self.hop_length
        if waveform.dtype != np.float32:
            waveform = waveform.astype(np.float32)
        half = self.n_fft // 2
        signal = np.pad(waveform, (0, padding)) if padding else waveform
        if len(signal) <= half:  # too short to reflect-pad; let the library raise its own error
            out: np.ndarray = super().__call__(waveform, padding, chunk_length)
            return out
        signal = np.pad(signal, (half, half), mode="reflect")  # the STFT's centring, as torch.stft does it
        n_frames = 1 + (len(signal) - self.n_fft) // self.hop_length
        frames = np.lib.stride_tricks.as_strided(
            signal, (n_frames, self.n_fft), (self.hop_length * signal.strides[0], signal.strides[0]), writeable=False
        )
        window = np.hanning(self.n_fft + 1)[:-1].astype("float32")
        kept = n_frames - 1  # the library drops the last frame
        mel = np.empty((self.mel_filters.shape[0], kept), dtype=np.float32)
        for a, b in _slices(kept):
            spectrum = np.fft.rfft(frames[a:b] * window, n=self.n_fft, axis=-1).astype("complex64")
            mel[:, a:b] = self.mel_filters @ (np.abs(spectrum.T) ** 2)
            del spectrum
        log_spec = np.log10(np.clip(mel, a_min=1e-10, a_max=None), out=mel)
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0, out=log_spec)
        result: np.ndarray = (log_spec + 4.0) / 4.0
        return result


def _slices(n: int) -> list[tuple[int, int]]:
    """[a, b) ranges of SLICE_FRAMES covering `n`; the last one takes the remainder (never narrow)."""
    cuts = list(range(SLICE_FRAMES, n, SLICE_FRAMES))
    if cuts and n - cuts[-1] < SLICE_FRAMES:
        cuts.pop()  # the remainder joins the slice before it, so no slice is a narrow product
    bounds = [0, *cuts, n]
    return list(itertools.pairwise(bounds))


def install(model: Any) -> None:
    """Give a loaded `WhisperModel` the sliced extractor (same settings as its own)."""
    model.feature_extractor = SlicedFeatureExtractor(**model.feat_kwargs)
