"""resemblyzer's GE2E voice encoder run in numpy: 40-band mel spectrogram → 3-layer LSTM → d-vector.

Exactly resemblyzer's computation (resemblyzer/audio.py, voice_encoder.py): a power mel spectrogram
(librosa's slaney filterbank, 25 ms Hann window, 10 ms hop, centred frames), 160-frame partial
utterances through LSTM(40→256)×3, the last layer's final hidden state through Linear(256→256) and ReLU,
L2-normalised. Many partials run as one batch; the input projections of each layer are one matrix
product over all frames, so only the recurrent product runs per step.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
EMBED_DIM = 256


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.asarray(
        np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)
    )


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.asarray(np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs))


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (slaney scale and norm): (n_mels, 1+n_fft/2)."""
    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sr / 2)), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    return np.asarray(weights * enorm[:, None], dtype=np.float32)


_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann
_MEL = mel_filterbank()


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """Power mel spectrogram of 16 kHz float audio, (frames, 40), frame i centred on sample i*160."""
    pad = N_FFT // 2
    padded = np.pad(wav.astype(np.float32), pad, mode="constant")
    n = 1 + (len(padded) - N_FFT) // HOP
    if n <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n]
    spec = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    return np.asarray(spec.astype(np.float32) @ _MEL.T, dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)


class VoiceEncoder:
    """The d-vector network with its weights as numpy arrays (see `weights.load`)."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.layers = [
            (
                np.ascontiguousarray(state[f"lstm.weight_ih_l{i}"].T),
                np.ascontiguousarray(state[f"lstm.weight_hh_l{i}"].T),
                (state[f"lstm.bias_ih_l{i}"] + state[f"lstm.bias_hh_l{i}"]).astype(np.float32),
            )
            for i in range(3)
        ]
        self.linear_w = np.ascontiguousarray(state["linear.weight"].T)
        self.linear_b = state["linear.bias"].astype(np.float32)

    @property
    def nbytes(self) -> int:
        """Memory the weights take."""
        return sum(a.nbytes for layer in self.layers for a in layer) + self.linear_w.nbytes + self.linear_b.nbytes

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """Embeddings of a batch of partials, (batch, frames, 40) → (batch, 256), each of unit length."""
        x = mels.astype(np.float32)
        batch, steps, _ = x.shape
        h = np.zeros((batch, EMBED_DIM), dtype=np.float32)
        for w_ih, w_hh, bias in self.layers:
            gates_in = (x.reshape(batch * steps, -1) @ w_ih + bias).reshape(batch, steps, 4 * EMBED_DIM)
            h = np.zeros((batch, EMBED_DIM), dtype=np.float32)
            c = np.zeros((batch, EMBED_DIM), dtype=np.float32)
            out = np.empty((batch, steps, EMBED_DIM), dtype=np.float32)
            for t in range(steps):
                g = gates_in[:, t] + h @ w_hh
                i, f, cand, o = np.split(g, 4, axis=1)  # torch's gate order: input, forget, cell, output
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(cand)
                h = _sigmoid(o) * np.tanh(c)
                out[:, t] = h
            x = out
        raw = np.maximum(h @ self.linear_w + self.linear_b, 0.0)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        return np.asarray(raw / np.maximum(norm, 1e-9), dtype=np.float32)

    def embed_utterance(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
        """One embedding for a whole utterance: resemblyzer's partials (50 % overlap), averaged, normalised."""
        frame_step = round(SAMPLE_RATE / rate / HOP)
        n_frames = int(np.ceil((len(wav) + 1) / HOP))
        starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
        last = starts[-1] * HOP
        if len(starts) > 1 and (len(wav) - last) / (PARTIAL_FRAMES * HOP) < min_coverage:
            starts.pop()
        need = (starts[-1] + PARTIAL_FRAMES) * HOP
        padded = np.pad(wav, (0, max(0, need - len(wav))))
        mel = mel_frames(padded)
        mel = np.pad(mel, ((0, max(0, starts[-1] + PARTIAL_FRAMES - len(mel))), (0, 0)))
        partials = self.embed(np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts]))
        mean = partials.mean(axis=0)
        return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-9), dtype=np.float32)
