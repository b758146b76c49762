"""Typicality scores of encoded samples: higher means more typical (easier), lower more atypical.

- prototype: cosine similarity to the nearest spherical k-means centroid (Sorscher et al. 2022);
  k centroids (default min(1000, ⌈√N⌉)).
- gaussian: log-density under a Gaussian with Ledoit-Wolf shrinkage covariance (DeVries et al. 2020,
  "Instance Selection for GANs"); within a group it ranks exactly as −Mahalanobis distance.
- knn: cosine similarity to the k-th nearest neighbour (default k = 10), a density estimate; the
  index takes a route by size (`index.knn_route`: exact, IVF-flat, or IVF-HNSW with PQ codes).

With `groups`, each group is scored on its own (its own centroids, Gaussian or neighbours).
"""
from __future__ import annotations

import math

import numpy as np

from .features import CHUNK, as_features
from .groups import group_members
from .index import knn_similarity, nearest_centroid, spherical_kmeans

KNN_K = 10  # the neighbour rank of the knn score by default


def score(features, method: str = "prototype", *, groups=None, k: int | None = None, seed: int = 0,
          progress: bool = False) -> np.ndarray:
    """float64 [N] scores of `features` (Features or [N, d] floats, memory-mapped is fine: read in blocks),
    higher = more typical; `progress` shows a bar per long step.

    >>> s = score(feats, "gaussian", groups=labels)
    >>> s = score(feats, "knn", k=10)
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    if k is not None and (method == "gaussian" or isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k: expected a positive int for prototype/knn and None for gaussian, got {k!r}")
    x = as_features(features)
    labels, members = group_members(groups, len(x))
    for label, idx in zip(labels, members):
        if method == "gaussian" and len(idx) < 2:
            raise ValueError(f"groups: group {label} has {len(idx)} sample; the gaussian score needs 2 or more")
        if method == "knn" and groups is not None and len(idx) <= (k or KNN_K):
            raise ValueError(f"groups: group {label} has {len(idx)} samples; knn with k = {k or KNN_K} needs more")
    out = np.empty(len(x))
    for idx in members:
        out[idx] = METHODS[method](x[idx] if groups is not None else x, k, seed, progress)
    return out


def _prototype(x: np.ndarray, k: int | None, seed: int, progress: bool) -> np.ndarray:
    k = k or min(1000, math.ceil(math.sqrt(len(x))))
    centroids = spherical_kmeans(x, k, seed=seed, progress=progress)
    return nearest_centroid(x, centroids, progress=progress)[0].astype(np.float64)


def _knn(x: np.ndarray, k: int | None, seed: int, progress: bool) -> np.ndarray:
    return knn_similarity(x, k or KNN_K, seed=seed, progress=progress)[0].astype(np.float64)


def _gaussian(x: np.ndarray, k: None, seed: int, progress: bool) -> np.ndarray:
    mean, cov = ledoit_wolf(x)
    precision = np.linalg.inv(cov)
    logdet = np.linalg.slogdet(cov)[1]
    out = np.empty(len(x))
    for s in range(0, len(x), CHUNK):
        xc = x[s:s + CHUNK] - mean
        out[s:s + CHUNK] = np.einsum("ij,ij->i", xc @ precision, xc)
    return -0.5 * (out + logdet + x.shape[1] * math.log(2 * math.pi))


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, Ledoit-Wolf shrunk covariance) of rows `x`, in float64, in one chunked pass over x.
    Same estimate as sklearn.covariance.LedoitWolf.

    >>> mean, cov = ledoit_wolf(x)
    """
    n, d = x.shape
    mean = x.mean(0, dtype=np.float64)
    s2 = np.zeros((d, d))  # Σ xcᵀ xc
    s4 = np.zeros((d, d))  # Σ (xc²)ᵀ (xc²)
    for s in range(0, n, CHUNK):
        xc = x[s:s + CHUNK] - mean
        s2 += xc.T @ xc
        s4 += (xc * xc).T @ (xc * xc)
    emp = s2 / n
    mu = np.trace(emp) / d
    delta_ = (emp ** 2).sum()
    beta = (s4.sum() / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * np.trace(emp) + d * mu ** 2) / d
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    return mean, (1 - shrinkage) * emp + shrinkage * mu * np.eye(d)


METHODS = {"prototype": _prototype, "gaussian": _gaussian, "knn": _knn}
