"""Group voice embeddings into speakers: agglomerative clustering (average linkage, cosine distance).

The number of speakers is the count `num_speakers` asks for, else what the distance threshold gives,
held within [min_speakers, max_speakers]. Memory stays bounded on long files: beyond `MAX_DIRECT`
embeddings, an evenly spread subset is clustered and every embedding joins its nearest centroid.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

#: embeddings clustered directly (scipy's condensed distance matrix: n²/2 float64, 16 MB at 2000)
MAX_DIRECT = 2000
#: cosine distance below which two groups of embeddings are one speaker
DEFAULT_THRESHOLD = 0.3
#: without a requested count, a cluster holding less than this share of the embeddings is folded into
#: its nearest neighbour (a cough, a laugh, a window that straddles two voices)
MIN_SHARE = 0.04
#: … or fewer embeddings than this (with 0.8-s steps, about 2.4 s of speech: too little to tell a voice)
MIN_COUNT = 3


def _centroids(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    cents = np.stack([x[labels == i].mean(axis=0) for i in range(k)])
    return np.asarray(cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-9), dtype=np.float32)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels 0..k-1 in order of first appearance."""
    order: dict[int, int] = {}
    for v in labels.tolist():
        order.setdefault(v, len(order))
    return np.array([order[v] for v in labels.tolist()], dtype=np.int64)


def _big(labels: np.ndarray) -> int:
    """How many clusters hold enough embeddings to be a speaker (see MIN_SHARE, MIN_COUNT)."""
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    return int((counts >= max(MIN_SHARE * len(labels), MIN_COUNT)).sum())


def _cut_to(z: np.ndarray, n: int, num: int) -> np.ndarray:
    """`num` clusters: the dendrogram cut at the fewest clusters of which `num` are big enough to be speakers
    (an outlier window, one short region's, is no speaker: it is folded back after), else at `num`."""
    for k in range(min(num, n), min(n, num + 8) + 1):
        labels = np.asarray(fcluster(z, t=k, criterion="maxclust"), dtype=np.int64)
        if _big(labels) >= num:
            return labels
    return np.asarray(fcluster(z, t=min(num, n), criterion="maxclust"), dtype=np.int64)


def _cut(z: np.ndarray, n: int, threshold: float, num: int | None, lo: int, hi: int) -> np.ndarray:
    if num is not None:
        return _cut_to(z, n, num)
    labels = np.asarray(fcluster(z, t=threshold, criterion="distance"), dtype=np.int64)
    k = len(set(labels.tolist()))
    if k > hi or k < lo:
        labels = np.asarray(fcluster(z, t=min(max(k, lo), hi, n), criterion="maxclust"), dtype=np.int64)
    return labels


def _fold_small(x: np.ndarray, labels: np.ndarray, lo: int) -> np.ndarray:
    """Fold clusters under MIN_SHARE into their nearest larger cluster, keeping at least `lo` clusters."""
    while True:
        k = int(labels.max()) + 1
        counts = np.bincount(labels, minlength=k)
        small = int(np.argmin(counts))
        if k <= max(lo, 1) or counts[small] >= max(MIN_SHARE * len(labels), MIN_COUNT):
            return labels
        cents = _centroids(x, labels, k)
        sims = cents @ cents[small]
        sims[small] = -np.inf
        labels = np.where(labels == small, int(np.argmax(sims)), labels)
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)


def cluster(
    x: np.ndarray,
    *,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> np.ndarray:
    """Speaker index (0, 1, … in order of first appearance) of each row of `x` (unit embeddings)."""
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lo = max(1, min_speakers or 1)
    hi = max(lo, max_speakers or n)
    if n == 1 or num_speakers == 1 or hi == 1:
        return np.zeros(n, dtype=np.int64)
    sample = x if n <= MAX_DIRECT else x[np.linspace(0, n - 1, MAX_DIRECT).round().astype(np.int64)]
    z = linkage(sample.astype(np.float64), method="average", metric="cosine")
    labels = np.unique(_cut(z, len(sample), threshold, num_speakers, lo, hi), return_inverse=True)[1]
    labels = labels.astype(np.int64)
    labels = _fold_small(sample, labels, num_speakers or lo)
    if n > MAX_DIRECT:
        cents = _centroids(sample, labels, int(labels.max()) + 1)
        labels = np.concatenate([np.argmax(x[i : i + 4096] @ cents.T, axis=1) for i in range(0, n, 4096)]).astype(
            np.int64
        )
    return _relabel(labels)
