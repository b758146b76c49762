"""FAISS building blocks for cosine similarity on float32 rows of any length: spherical k-means and
k-nearest-neighbour search. Rows may be memory-mapped: they are read and L2-normalised in blocks of
BLOCK rows, never copied whole.

kNN search takes a route by size (`knn_route`):
- "exact": `IndexFlatIP`, up to EXACT_MAX rows (on 2 CPU cores an exact search over 100k×512 takes ~100 s);
- "ivf-flat": `IndexIVFFlat` (NLIST_PER_SQRT_N·√N lists, NPROBE probed), up to IVF_FLAT_MAX rows; it holds
  the vectors uncompressed (4·d bytes a row);
- "ivf-pq": IVF with an HNSW coarse quantizer (lists found in log time however many), 4-bit fast-scan PQ
  codes (d/8 bytes a row) to find candidates, re-ranked by 8-bit scalar-quantised copies (d bytes a row):
  FAISS's route for 10M-1B vectors.
k-means trains on at most 256 rows per centroid, sampled.
"""
from __future__ import annotations

import math

import faiss
import numpy as np
from tqdm.auto import tqdm

EXACT_MAX = 20_000
IVF_FLAT_MAX = 200_000
NLIST_PER_SQRT_N = 4
NPROBE = 4
PQ_NPROBE, PQ_K_FACTOR = 8, 10  # ivf-pq: lists probed, candidates re-ranked per neighbour asked
BLOCK = 65536
ROUTES = ("exact", "ivf-flat", "ivf-pq")


def unit_rows(x: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """A unit-norm float32 copy of rows start:stop of `x` (what cosine search in FAISS expects)."""
    y = np.array(x[start:stop], dtype=np.float32, order="C")
    faiss.normalize_L2(y)
    return y


def _blocks(n: int, progress: bool, desc: str):
    with tqdm(total=n, disable=not progress, desc=desc, unit="row", leave=False) as bar:
        for s in range(0, n, BLOCK):
            yield s, min(s + BLOCK, n)
            bar.update(min(BLOCK, n - s))


def sample_rows(x: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Unit-norm copies of m rows of `x` drawn without replacement (all rows when m >= N), in row order."""
    if m >= len(x):
        return unit_rows(x)
    idx = np.sort(np.random.default_rng(seed).choice(len(x), m, replace=False))
    y = np.ascontiguousarray(x[idx], dtype=np.float32)
    faiss.normalize_L2(y)
    return y


def spherical_kmeans(x: np.ndarray, k: int, *, seed: int = 0, niter: int = 20, progress: bool = False,
                     max_points_per_centroid: int = 256) -> np.ndarray:
    """Unit-norm centroids [min(k, N), d] of the rows of `x` (normalised here), trained on at most
    `max_points_per_centroid`·k sampled rows, one FAISS iteration at a time for the progress bar.

    >>> centroids = spherical_kmeans(x, 100, seed=0)
    """
    k = min(k, len(x))
    train = sample_rows(x, max_points_per_centroid * k, seed)
    cp = faiss.ClusteringParameters()
    cp.niter, cp.seed, cp.spherical = 1, seed, True
    cp.min_points_per_centroid, cp.max_points_per_centroid = 1, max_points_per_centroid
    clus, index = faiss.Clustering(x.shape[1], k, cp), faiss.IndexFlatIP(x.shape[1])
    for _ in tqdm(range(niter), disable=not progress, desc="k-means", unit="iter", leave=False):
        clus.train(train, index)  # continues from the centroids of the previous call
        index.reset()
    return faiss.vector_to_array(clus.centroids).reshape(k, x.shape[1])


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity, index) of each row's nearest centroid."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    sim, label = np.empty(len(x), np.float32), np.empty(len(x), np.int64)
    for s, e in _blocks(len(x), progress, "assign"):
        d, i = index.search(unit_rows(x, s, e), 1)
        sim[s:e], label[s:e] = d[:, 0], i[:, 0]
    return sim, label


def knn_route(n: int, d: int) -> str:
    """The kNN index route for n rows of d dims: "exact", "ivf-flat" or "ivf-pq" (see the module
    docstring; ivf-pq needs d divisible by 16).

    >>> knn_route(10_000_000, 512)
    'ivf-pq'
    """
    return "exact" if n <= EXACT_MAX else "ivf-flat" if n <= IVF_FLAT_MAX or d % 16 else "ivf-pq"


def knn_similarity(x: np.ndarray, k: int, *, seed: int = 0, route: str | None = None,
                   progress: bool = False) -> tuple[np.ndarray, str]:
    """Cosine similarity of each row to its k-th nearest other row, and the index used; `route`
    overrides `knn_route(N)`.

    >>> sim, kind = knn_similarity(x, 10)
    """
    n, d = x.shape
    if not 1 <= k < n:
        raise ValueError(f"k: expected 1 <= k < N = {n} for kNN density, got {k}")
    route = route or knn_route(n, d)
    if route not in ROUTES:
        raise ValueError(f"route: expected one of {ROUTES}, got {route!r}")
    if route == "exact":
        index, kind = faiss.IndexFlatIP(d), "IndexFlatIP (exact)"
    else:
        index, kind, train = _ivf(route, n, d, seed)
        index.train(sample_rows(x, train, seed))
    for s, e in _blocks(n, progress, "kNN index"):
        index.add(unit_rows(x, s, e))
    sim = np.empty(n, np.float32)
    for s, e in _blocks(n, progress, "kNN search"):
        sim[s:e] = index.search(unit_rows(x, s, e), k + 1)[0][:, k]  # the row itself comes first
    return sim, kind


def _ivf(route: str, n: int, d: int, seed: int) -> tuple[faiss.Index, str, int]:
    """(untrained index, description, training rows) of an IVF route."""
    nlist = max(1, int(NLIST_PER_SQRT_N * math.sqrt(n)))
    if route == "ivf-flat":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = NPROBE
        ivf, kind = index, f"IndexIVFFlat (nlist={nlist}, nprobe={NPROBE})"
    else:
        if d % 16:
            raise ValueError(f"route: ivf-pq needs a feature dimension divisible by 16, got d = {d}")
        spec = f"IVF{nlist}_HNSW32,PQ{d // 8}x4fs,Refine(SQ8)"  # sub-vectors of 8 dims, 4 bits each
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        index.k_factor = PQ_K_FACTOR
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = PQ_NPROBE
        kind = f"{spec} (nprobe={PQ_NPROBE}, k_factor={PQ_K_FACTOR})"
    ivf.cp.seed, ivf.cp.niter = seed, 10
    return index, kind, 39 * nlist
