"""Time, peak memory and quality of the pruner's stages on synthetic clustered features, memory-mapped
from a .npy file as `curatedloader prune` reads them.

    python benchmarks/prune_scale.py --n 1000000 --d 512                      # the RESULTS.md figures
    python benchmarks/prune_scale.py --n 100000 --stages knn --routes ivf-pq  # one stage, smaller

Stages: kmeans (score("prototype"): spherical k-means on ≤ 256 sampled rows per centroid, ⌈√N⌉ ≤ 1000
centroids, + nearest-centroid scores), knn (score("knn"), k = 10, once per --routes entry; quality:
Spearman rank correlation of the 10th-neighbour similarity with exact search, over --exact-queries
sampled rows), dedup (near_duplicates, eps = 0.05; quality: recall of the planted near-duplicate pairs,
a pair found when one of its two rows is flagged). Memory: peak anonymous resident memory above the
level before the stage (file pages of the memory-mapped features, which the kernel can drop, not
counted), sampled every 20 ms.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import faiss
import numpy as np

from curatedloader.pruning import near_duplicates, score
from curatedloader.pruning.index import BLOCK, knn_similarity, knn_route, unit_rows
from curatedloader.pruning.profile import PeakRSS


def random_clusters(path: str, n: int, d: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write unit centres plus noise of half their norm, with 1% planted near-duplicates (a copy of
    another row plus noise 1% of its norm), to a float32 [n, d] .npy at `path`; return it memory-mapped
    and the planted (original, copy) pairs [n/100, 2]."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, BLOCK):
        m = min(BLOCK, n - s)
        x[s:s + m] = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, d), dtype=np.float32) * (0.5 / math.sqrt(d))
    rows = rng.permutation(n)[:2 * (n // 100)].reshape(-1, 2)  # disjoint (original, copy) pairs
    rows = rows[np.argsort(rows[:, 1])]
    x[rows[:, 1]] = x[rows[:, 0]] + rng.standard_normal((len(rows), d), dtype=np.float32) * (0.01 / math.sqrt(d))
    x.flush()
    return np.load(path, mmap_mode="r"), rows


def exact_knn(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact cosine similarity of each query row of `x` to its k-th nearest other row, by blocks of x."""
    q = unit_rows(x[queries])
    best = np.full((len(q), k + 1), -np.inf, np.float32)
    for s in range(0, len(x), BLOCK):
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(unit_rows(x, s, s + BLOCK))
        sim = index.search(q, k + 1)[0]
        best = -np.sort(-np.hstack([best, sim]), axis=1)[:, :k + 1]
    return best[:, k]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = (np.argsort(np.argsort(v, kind="stable")).astype(np.float64) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--stages", default="kmeans,knn,dedup")
    p.add_argument("--routes", default=None, help="kNN routes, comma-separated (default: knn_route(N, d))")
    p.add_argument("--exact-queries", type=int, default=10_000, help="rows whose exact kNN is the reference")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the features .npy is written")
    args = p.parse_args()
    path = os.path.join(args.dir, f"prune_scale_{args.n}x{args.d}.npy")
    t = time.perf_counter()
    x, pairs = random_clusters(path, args.n, args.d, args.clusters)
    n = args.n
    print(f"N={n} d={args.d} ({x.nbytes / 2**30:.2f} GiB, memory-mapped from {path}, written in "
          f"{time.perf_counter() - t:.0f} s) clusters={args.clusters} faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads")
    print("| stage | seconds | peak extra anon RSS (GiB) | index / notes | quality |")
    print("|---|---|---|---|---|")
    for stage in args.stages.split(","):
        if stage == "kmeans":
            with PeakRSS() as mem:
                s = score(x, "prototype")
            _row(stage, mem, f"{min(1000, math.ceil(math.sqrt(n)))} centroids", f"score range {s.min():.3f}..{s.max():.3f}")
        elif stage == "knn":
            queries = np.sort(np.random.default_rng(1).choice(n, min(n, args.exact_queries), replace=False))
            with PeakRSS() as mem:
                exact = exact_knn(x, queries, 10)
            _row("exact kNN reference", mem, f"IndexFlatIP over blocks, {len(queries)} query rows", "—")
            for route in (args.routes or knn_route(n, args.d)).split(","):
                with PeakRSS() as mem:
                    sim, kind = knn_similarity(x, 10, route=route)
                rho = spearman(sim[queries], exact)
                _row(f"knn ({route})", mem, kind, f"Spearman vs exact {rho:.3f}, mean |error| "
                     f"{np.abs(sim[queries] - exact).mean():.4f}")
        elif stage == "dedup":
            with PeakRSS() as mem:
                drop = near_duplicates(x, eps=0.05)
            recall = (drop[pairs[:, 0]] | drop[pairs[:, 1]]).mean()
            _row(stage, mem, "⌈√N⌉ clusters, blocked exact within cluster",
                 f"{int(drop.sum())} flagged, recall of {len(pairs)} planted pairs {recall:.4f}")
        else:
            raise SystemExit(f"--stages: unknown stage {stage!r}; expected kmeans, knn, dedup")


def _row(stage: str, mem: PeakRSS, note: str, quality: str) -> None:
    print(f"| {stage} | {mem.seconds:.1f} | {mem.extra / 2**30:.2f} | {note} | {quality} |", flush=True)


if __name__ == "__main__":
    main()
