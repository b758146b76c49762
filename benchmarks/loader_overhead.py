"""Loader overhead: CuratedLoader with selection off vs DataLoader, and the selection machinery alone.

1. Throughput (samples/s) of CuratedLoader(scorer=None) and DataLoader on the same synthetic image
   dataset, workers and batch size, interleaved runs in one process; reports the ratio (aim >= 0.97).
2. The selection machinery at B=4096 (everything but model forwards: scorer glue with a precomputed
   score table, Gumbel-top-k draw, gathering and collating the sub-batch) in ms per step, as a
   fraction of one training step (forward + backward + optimizer) of a small CNN on the sub-batch.

Rows go to OUT/loader_overhead.jsonl (`python -m curatedloader.bench report` makes the tables).

    python benchmarks/loader_overhead.py            # full run, a few minutes on 2 cores
    python benchmarks/loader_overhead.py --quick
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from curatedloader import JEST, CuratedLoader, Scorer, Scores
from curatedloader.bench import (
    Timing, banner, context, interleaved, measure, output_args, throughput, write_rows,
)
from curatedloader.bench_overhead import small_cnn


class Images(Dataset):
    """Synthetic uint8 images decoded to float, as an image pipeline's last step would."""

    def __init__(self, n: int, size: int = 32):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        img = torch.randint(0, 256, (3, self.size, self.size), dtype=torch.uint8, generator=g)
        return img.float().div_(255), i % 10


class TableScorer(Scorer):
    """Looks scores up by sample id: the machinery without any model forward."""

    def __init__(self, n: int):
        self.learner, self.reference = torch.randn(n), torch.randn(n)

    def score(self, batch, ids) -> Scores:
        return Scores(learner=self.learner[ids], reference=self.reference[ids])


def compare_throughput(args) -> dict:
    data = Images(args.n)
    kw = dict(batch_size=args.batch_size, num_workers=args.workers, shuffle=True)
    seeds = iter(range(10**6))
    rows = lambda batch: len(batch[0])  # noqa: E731
    runs = interleaved({
        "dataloader": lambda: throughput(DataLoader(data, generator=torch.Generator().manual_seed(next(seeds)), **kw), rows),
        "curatedloader": lambda: throughput(CuratedLoader(data, seed=next(seeds), **kw), rows),
    }, args.repeats)
    dl, cl = statistics.median(runs["dataloader"]), statistics.median(runs["curatedloader"])
    return {"n": args.n, "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
            "dataloader_samples_s": dl, "curatedloader_samples_s": cl, "ratio": cl / dl}


def machinery(args) -> dict:
    B, b = 4096, 819  # filter_ratio 0.8
    steps = 4 if args.quick else 12
    data = Images(B * steps)
    loader = CuratedLoader(data, batch_size=b, super_batch_size=B, scorer=TableScorer(len(data)),
                           selector=JEST(), shuffle=True)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step_ms = []
    for x, y in loader:
        def step():
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        step_ms += measure(step, warmup=0, repeats=1).ms
    s = loader.stats
    mech, train = (s.score_ms + s.select_ms) / s.steps, Timing(step_ms)
    return {"B": B, "b": b, "steps": s.steps, "machinery_ms": mech, **train.row("train_step"),
            "fraction": mech / train.median}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--n", type=int, default=None, help="samples per epoch (default 20000, quick 2000)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="interleaved runs of each (default 5, quick 1)")
    output_args(p, "loader_overhead")
    args = p.parse_args()
    args.n = args.n or (2000 if args.quick else 20000)
    args.repeats = args.repeats or (1 if args.quick else 5)
    torch.set_num_threads(1)
    print(banner())

    t = compare_throughput(args)
    print(f"selection off, {args.n} samples, batch {args.batch_size}, {args.workers} workers, "
          f"median of {args.repeats}:")
    print(f"  DataLoader    {t['dataloader_samples_s']:10.0f} samples/s")
    print(f"  CuratedLoader {t['curatedloader_samples_s']:10.0f} samples/s   ratio {t['ratio']:.3f}")
    m = machinery(args)
    print(f"selection machinery at B={m['B']}, b={m['b']} (no model forwards): {m['machinery_ms']:.2f} ms/step; "
          f"training step of a small CNN on b={m['b']} (CPU, 1 thread): {m['train_step_ms']:.1f} ms; "
          f"fraction {m['fraction']:.2%}")
    path = write_rows(args.out / "loader_overhead.jsonl", [
        {**context("loader_overhead/throughput"), **t}, {**context("loader_overhead/machinery"), **m}])
    print("rows:", path)


if __name__ == "__main__":
    main()
