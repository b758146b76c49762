"""Cost anatomy: where the CPU of a step goes, per loader configuration, on cheap in-memory rows.

Per step, process CPU time (`time.process_time`, one torch thread) and wall-clock of one epoch's pass:
DataLoader at b rows, CuratedLoader(scorer=None) at b, DataLoader at B rows, CuratedLoader selecting
with each selector on a free scorer (scores looked up by sample id: the machinery alone), JEST with the
CrossEntropyScorer (learner + reference table), the scoring forward on B rows alone, and the training
step on b rows alone. Contenders run interleaved, `--repeats` rounds, medians reported. With workers,
process CPU counts the main process only: the wall-clock is the figure to compare.

Ratios: `off_vs_dataloader` = DataLoader(b) time / CuratedLoader-off time (throughput ratio, aim >= 0.95);
`<selector>_free_vs_dataloader_B` = DataLoader(B) time / selecting-step time (aim >= 0.9).

    python benchmarks/cost_anatomy.py                 # batch 64 and 256, workers 0 and 2
    python benchmarks/cost_anatomy.py --quick
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from curatedloader import JEST, CuratedLoader, Scorer, Scores, TopK, Uniform
from curatedloader.bench import banner, context, interleaved, output_args, write_rows
from curatedloader.scoring import CrossEntropyScorer

SELECTORS = {"jest": JEST, "topk": TopK, "uniform": Uniform}


class FreeScorer(Scorer):
    """Scores looked up by sample id: selection's machinery without any model forward."""

    def __init__(self, n: int):
        g = torch.Generator().manual_seed(0)
        self.learner, self.reference = torch.randn(n, generator=g), torch.randn(n, generator=g)

    def score(self, batch, ids) -> Scores:
        return Scores(learner=self.learner[ids], reference=self.reference[ids])


def per_step(loader: Any) -> tuple[float, float]:
    """(process CPU ms, wall ms) per batch over one pass of `loader`, its start-up included."""
    c0, w0, steps = time.process_time(), time.perf_counter(), 0
    for _ in loader:
        steps += 1
    return 1e3 * (time.process_time() - c0) / steps, 1e3 * (time.perf_counter() - w0) / steps


def per_call(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    """(process CPU ms, wall ms) per call of `fn`."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e3 * (time.process_time() - c0) / calls, 1e3 * (time.perf_counter() - w0) / calls


def configuration(b: int, workers: int, args) -> dict:
    B = round(b / (1 - args.filter_ratio))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.n, args.dim, generator=g), torch.randint(10, (args.n,), generator=g)
    data = TensorDataset(x, y)
    model = nn.Sequential(nn.Linear(args.dim, args.width), nn.ReLU(), nn.Linear(args.width, 10))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    reference = torch.rand(args.n, generator=g)
    free = FreeScorer(args.n)
    kw = dict(shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    seeds = itertools.count()

    def curated(batch_size: int, **more) -> CuratedLoader:
        return CuratedLoader(data, batch_size=batch_size, seed=next(seeds), **kw, **more)

    def dataloader(batch_size: int) -> DataLoader:
        return DataLoader(data, batch_size=batch_size, generator=torch.Generator().manual_seed(next(seeds)), **kw)

    # loaders built once (persistent workers start once), each pass a fresh epoch
    loaders = {"dataloader_b": dataloader(b), "curated_off": curated(b), "dataloader_B": dataloader(B)}
    for name, make in SELECTORS.items():
        loaders[f"{name}_free"] = curated(b, super_batch_size=B, scorer=free, selector=make())
    loaders["jest_ce"] = curated(b, super_batch_size=B, scorer=CrossEntropyScorer(model, reference_losses=reference),
                                 selector=JEST())
    contenders: dict[str, Callable[[], tuple[float, float]]] = {
        name: (lambda loader=loader: per_step(loader)) for name, loader in loaders.items()}
    sub, big = (x[:b], y[:b]), (x[:B], y[:B])
    ce = CrossEntropyScorer(model, reference_losses=reference)
    ids = torch.arange(B)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(sub[0]), sub[1]).backward()
        opt.step()

    contenders["score_forward"] = lambda: per_call(lambda: ce(big, ids), args.calls)
    contenders["train_step"] = lambda: per_call(train, args.calls)
    for fn in contenders.values():
        fn()  # warm-up: workers started, first-call costs paid
    runs = interleaved(contenders, args.repeats)
    row: dict[str, Any] = {"b": b, "B": B, "workers": workers, "n": args.n, "dim": args.dim, "width": args.width,
                           "repeats": args.repeats}
    for name, values in runs.items():
        row[f"{name}_cpu_ms"] = statistics.median(v[0] for v in values)
        row[f"{name}_wall_ms"] = statistics.median(v[1] for v in values)
    clock = "cpu" if workers == 0 else "wall"
    row["clock"] = clock
    row["off_vs_dataloader"] = row[f"dataloader_b_{clock}_ms"] / row[f"curated_off_{clock}_ms"]
    for name in SELECTORS:
        row[f"{name}_free_vs_dataloader_B"] = row[f"dataloader_B_{clock}_ms"] / row[f"{name}_free_{clock}_ms"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    p.add_argument("--batch-size", type=int, nargs="+", default=[64, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--filter-ratio", type=float, default=0.8)
    p.add_argument("--n", type=int, default=None, help="rows per epoch (default 20480, quick 2560)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--width", type=int, default=256, help="hidden width of the MLP scored and trained")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5, quick 1)")
    p.add_argument("--calls", type=int, default=50, help="calls per timing of the forward and the train step")
    output_args(p, "cost_anatomy")
    args = p.parse_args()
    args.n = args.n or (2560 if args.quick else 20480)
    args.repeats = args.repeats or (1 if args.quick else 5)
    torch.set_num_threads(1)
    print(banner())
    rows = []
    for b, workers in itertools.product(args.batch_size, args.workers):
        row = configuration(b, workers, args)
        rows.append({**context("cost_anatomy"), **row})
        clock = row["clock"]
        print(f"b={b} B={row['B']} workers={workers} ({clock} ms per step, median of {args.repeats}):")
        for key, value in row.items():
            if key.endswith(f"_{clock}_ms"):
                print(f"  {key[: -len(clock) - 4]:16} {value:8.3f}")
        print(f"  CuratedLoader off vs DataLoader(b): {row['off_vs_dataloader']:.3f}; selecting with a free scorer "
              "vs DataLoader(B): " + ", ".join(f"{s} {row[f'{s}_free_vs_dataloader_B']:.3f}" for s in SELECTORS))
    print("rows:", write_rows(args.out / "cost_anatomy.jsonl", rows))


if __name__ == "__main__":
    main()
