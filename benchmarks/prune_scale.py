"""Time and peak memory of the pruner's FAISS stages on random-cluster features.

    python benchmarks/prune_scale.py --n 1000000 --d 512      # the RESULTS.md figures
    python benchmarks/prune_scale.py --n 100000 --stages knn   # one stage, smaller

Stages: kmeans (spherical k-means, ⌈√N⌉ ≤ 1000 centroids, + nearest-centroid scores = score("prototype")),
knn (score("knn"), k = 10), dedup (near_duplicates, eps = 0.05). Peak memory is the process RSS above what
it held before the stage (the features themselves), sampled every 20 ms.
"""
from __future__ import annotations

import argparse
import math
import os
import threading
import time

import faiss
import numpy as np

from curatedloader.pruning import near_duplicates, score
from curatedloader.pruning.index import EXACT_MAX, NLIST_PER_SQRT_N, NPROBE


def random_clusters(n: int, d: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Unit centres plus noise of half their norm, with 1% exact-ish duplicates, float32 [n, d]."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        x[s:s + m] = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, d), dtype=np.float32) * (0.5 / math.sqrt(d))
    dup = rng.choice(n, n // 100, replace=False)
    x[dup] = x[rng.choice(n, len(dup))] + rng.standard_normal((len(dup), d), dtype=np.float32) * (0.01 / math.sqrt(d))
    return x


class PeakRSS:
    """Peak resident memory (bytes) above the level at entry, sampled in a thread."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.extra = self.peak - self.base


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--stages", default="kmeans,knn,dedup")
    args = p.parse_args()
    x = random_clusters(args.n, args.d, args.clusters)
    n = args.n
    index = "IndexFlatIP (exact)" if n <= EXACT_MAX else \
        f"IndexIVFFlat (nlist={int(NLIST_PER_SQRT_N * math.sqrt(n))}, nprobe={NPROBE})"
    print(f"N={n} d={args.d} ({x.nbytes / 2**30:.2f} GiB) clusters={args.clusters} "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    stages = {
        "kmeans": (lambda: score(x, "prototype"), f"{min(1000, math.ceil(math.sqrt(n)))} centroids, IndexFlatIP assign"),
        "knn": (lambda: score(x, "knn"), f"k=10, {index}"),
        "dedup": (lambda: near_duplicates(x, eps=0.05), "⌈√N⌉ clusters, blocked exact within cluster"),
    }
    print("| stage | seconds | peak extra RSS (GiB) | index / notes | result |")
    print("|---|---|---|---|---|")
    for name in args.stages.split(","):
        fn, note = stages[name]
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t
        result = f"{int(out.sum())} flagged" if out.dtype == bool else f"score range {out.min():.3f}..{out.max():.3f}"
        print(f"| {name} | {seconds:.1f} | {mem.extra / 2**30:.2f} | {note} | {result} |", flush=True)


if __name__ == "__main__":
    main()
