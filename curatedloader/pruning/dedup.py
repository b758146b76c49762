"""SemDeDup (Abbas et al. 2023): semantic near-duplicates within k-means clusters."""
from __future__ import annotations

import math

import numpy as np

from tqdm.auto import tqdm

from .features import as_features
from .index import nearest_centroid, spherical_kmeans, unit_rows

BLOCK = 1024  # rows compared at once against the kept rows of a cluster


def near_duplicates(features, *, eps: float = 0.05, n_clusters: int | None = None, seed: int = 0,
                    progress: bool = False) -> np.ndarray:
    """bool [N], True for each sample to drop: its cosine similarity to an already kept sample of its
    spherical k-means cluster exceeds 1 − eps. Within a cluster, samples farthest from the centroid are
    kept first (SemDeDup's choice); n_clusters defaults to ⌈√N⌉.

    >>> drop = near_duplicates(feats, eps=0.05)
    >>> feats.array[~drop]  # deduplicated
    """
    if not 0 <= eps < 1:
        raise ValueError(f"eps: expected 0 <= eps < 1, got {eps}")
    x = as_features(features)
    centroids = spherical_kmeans(x, n_clusters or math.ceil(math.sqrt(len(x))), seed=seed, progress=progress)
    sim, label = nearest_centroid(x, centroids, progress=progress)
    order = np.lexsort((sim, label))  # by cluster, then least typical first
    bounds = np.searchsorted(label[order], np.arange(len(centroids) + 1))
    drop = np.zeros(len(x), bool)
    with tqdm(total=len(x), disable=not progress, desc="dedup", unit="row", leave=False) as bar:
        for a, b in zip(bounds[:-1], bounds[1:]):
            idx = order[a:b]
            rows = np.sort(idx)  # read a memory-mapped array forwards
            unit = unit_rows(x[rows])[np.searchsorted(rows, idx)]
            drop[idx] = _greedy(unit, 1 - eps)
            bar.update(b - a)
    return drop


def _greedy(x: np.ndarray, threshold: float) -> np.ndarray:
    """Drop flags for rows in priority order: a row is dropped if it is too similar to a kept earlier row."""
    drop = np.zeros(len(x), bool)
    for s in range(0, len(x), BLOCK):
        block, d = x[s:s + BLOCK], drop[s:s + BLOCK]
        kept = x[:s][~drop[:s]]
        if len(kept):
            d |= (block @ kept.T).max(1) > threshold
        near = np.tril(block @ block.T, -1) > threshold  # earlier rows of this block
        for i in np.flatnonzero(near.any(1) & ~d):  # rows before i are final when i is decided
            d[i] = (near[i, :i] & ~d[:i]).any()
    return drop
