"""The offline diarization engine: torch-free weights, the numpy encoder against torch's output, clustering."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from asr_daemon.diarization import cluster, encoder, engine, fetch, weights

DATA = Path(__file__).resolve().parent.parent / "data"


def _reference_signal() -> np.ndarray:
    t = np.arange(int(16000 * 2.5)) / 16000
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wav = sum((0.3 / k) * np.sin(k * phase) for k in range(1, 25)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.asarray(0.1 * wav, dtype=np.float32)


def test_encoder_matches_resemblyzer_under_torch(diarization_models: Path) -> None:
    """The numpy mel + LSTM gives resemblyzer's own (torch) embeddings of a fixed signal to 1e-4."""
    ref = json.loads((DATA / "resemblyzer_reference.json").read_text())
    net = encoder.VoiceEncoder(weights.load(fetch.encoder_dir(diarization_models)))
    wav = _reference_signal()
    mel = encoder.mel_frames(wav)
    assert list(mel.shape) == ref["mel_shape"]
    assert float(mel.astype(np.float64).sum()) == pytest.approx(ref["mel_sum"], rel=1e-4)
    part = net.embed(mel[None, : encoder.PARTIAL_FRAMES])[0]
    assert np.abs(part - np.array(ref["first_partial"])).max() < 1e-4
    utt = net.embed_utterance(wav)
    assert np.abs(utt - np.array(ref["utterance"])).max() < 1e-4
    assert np.linalg.norm(utt) == pytest.approx(1.0, abs=1e-5)


def test_installed_weights_come_from_the_package(diarization_models: Path) -> None:
    """The installed encoder.npz holds exactly the LSTM/linear tensors of resemblyzer's pretrained.pt."""
    pt = fetch.package_checkpoint()
    assert pt is not None, "resemblyzer is not installed: is the `models` dependency group installed?"
    with pt.open("rb") as f:
        direct = weights.read_legacy_pt(f)
    stored = weights.load(fetch.encoder_dir(diarization_models))
    assert set(stored) == set(weights.KEYS)
    for key in weights.KEYS:
        np.testing.assert_array_equal(stored[key], direct[key])


def _malicious_checkpoint() -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    buf = io.BytesIO()
    pickle.dump(Evil(), buf, protocol=2)
    return buf.getvalue()


def test_checkpoint_naming_other_code_is_refused(tmp_path: Path) -> None:
    """A .pt whose pickles name any callable beyond a state dict's is refused, never executed."""
    bad = tmp_path / "pretrained.pt"
    bad.write_bytes(_malicious_checkpoint())
    with pytest.raises(weights.WeightsError):
        weights.from_file(bad)
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(weights.MEMBER, _malicious_checkpoint())
    with pytest.raises(weights.WeightsError):
        weights.from_file(wheel)


def test_garbage_files_are_not_weights(tmp_path: Path) -> None:
    """Random bytes, an empty file and a wheel without pretrained.pt each give WeightsError, not a crash."""
    for name, body in (("a.pt", b""), ("b.pt", bytes(range(256)) * 10)):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(weights.WeightsError):
            weights.from_file(tmp_path / name)
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("other/file.txt", "x")
    with pytest.raises(weights.WeightsError):
        weights.from_file(wheel)
    with pytest.raises(weights.WeightsError):
        weights.save({"linear.bias": np.zeros(3, dtype=np.float32)}, tmp_path / "out")
    assert not (tmp_path / "out" / weights.NPZ_NAME).exists()


def _blobs(centres: list[np.ndarray], per: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [c + noise * rng.standard_normal(len(c)) for c in centres for _ in range(per)]
    x = np.stack(rows).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _centres(k: int, dim: int = 256, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(dim) for _ in range(k)]


def test_cluster_finds_separate_voices_and_honours_counts() -> None:
    """Three well-separated groups give three speakers; num/min/max speakers override the threshold."""
    x = _blobs(_centres(3), 20, 0.02)
    labels = cluster.cluster(x)
    assert labels.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    assert len(set(cluster.cluster(x, num_speakers=2).tolist())) == 2
    assert len(set(cluster.cluster(x, max_speakers=2).tolist())) == 2
    assert len(set(cluster.cluster(x, num_speakers=1).tolist())) == 1
    one = _blobs(_centres(1), 30, 0.02)
    assert set(cluster.cluster(one).tolist()) == {0}
    assert len(set(cluster.cluster(one, min_speakers=2).tolist())) == 2
    assert len(set(cluster.cluster(x, num_speakers=1000).tolist())) <= len(x)


def test_given_count_is_of_speakers_not_outliers() -> None:
    """num_speakers=2 on two voices plus one stray window gives the two voices (the stray joins the nearer),
    not one voice and the stray (what a plain cut of the dendrogram at 2 gives)."""
    a, other, stray = (c / np.linalg.norm(c) for c in _centres(3, seed=7))
    b = a + 0.8 * other  # two similar voices (cosine about 0.8), as real ones are to this encoder
    x = _blobs([a, b], 15, 0.02)
    stray_row = 0.9 * stray + 0.2 * a
    x = np.vstack([x, (stray_row / np.linalg.norm(stray_row))[None]]).astype(np.float32)
    labels = cluster.cluster(x, num_speakers=2)
    assert labels[:15].tolist() == [0] * 15 and labels[15:30].tolist() == [1] * 15
    assert labels[30] == 0  # nearer to voice a


def test_cluster_edge_sizes_and_bounded_memory() -> None:
    """No embeddings → no speakers, one → one; beyond MAX_DIRECT the subset-and-assign path labels all."""
    assert cluster.cluster(np.zeros((0, 256), dtype=np.float32)).tolist() == []
    assert cluster.cluster(_blobs(_centres(1), 1, 0.0)).tolist() == [0]
    big = _blobs(_centres(2, seed=5), cluster.MAX_DIRECT, 0.02)
    labels = cluster.cluster(big)
    assert labels[: cluster.MAX_DIRECT].tolist() == [0] * cluster.MAX_DIRECT
    assert labels[cluster.MAX_DIRECT :].tolist() == [1] * cluster.MAX_DIRECT


def test_speaker_labels() -> None:
    """Speakers are labelled A…Z, then AA, AB, … like spreadsheet columns."""
    assert [engine.speaker_label(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
