"""`curatedloader bench`: what online selection costs on your model and shapes, and where the time goes.

Each stage of a selecting step is timed on its own, by calling the pieces directly: a DataLoader loading
the super-batch of B rows, the scorer on it, the selector's draw of b indices, the gather of those rows
(`index_batch`), and the training step on the b rows; against it, a plain step loads b rows and trains
on them. The break-even is (step with selection) / (plain step): how many times more useful per trained
sample the selected rows must be for selection to pay at equal compute.

    curatedloader bench --rows 2048 --dim 64 --classes 10 --batch-size 32 --filter-ratio 0.8
    curatedloader bench --factory mypkg.setup:make --batch-size 64 128 --selector jest topk
"""
from __future__ import annotations

import argparse
import copy
import importlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import bench
from .batch import index_batch
from .scores import Scorer, as_scores, model_device
from .scoring.cross_entropy import CrossEntropyScorer, to_device
from .selection import JEST, TopK, Uniform

SELECTORS: dict[str, Callable[[], Callable]] = {"jest": JEST, "topk": TopK, "uniform": Uniform}
PRESETS = {  # synthetic shapes standing for common workloads
    "vision": dict(rows=2048, classes=10, what="3x32x32 images, a small CNN"),
    "text": dict(rows=1024, classes=1000, what="64-token sequences, a token embedding + 2-layer MLP LM"),
}
STAGES = ("load_B", "score", "draw", "gather", "train", "load_b")


@dataclass
class Setup:
    """What the benchmark runs: `train_step(batch)` (optional) trains on b rows of the collated batch."""

    dataset: Dataset
    scorer: Callable
    model: Optional[nn.Module] = None
    train_step: Optional[Callable[[Any], Any]] = None
    collate_fn: Optional[Callable] = None
    description: str = "factory"


def small_cnn(classes: int = 10) -> nn.Module:
    """A small CIFAR-sized CNN (3x32x32 inputs)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, classes),
    )


def synthetic(rows: int, dim: int, classes: int, preset: Optional[str], device: torch.device, seed: int = 0) -> Setup:
    """A synthetic dataset, a classifier, its CrossEntropyScorer (reference: a copy, scored online) and an
    SGD train step, for `preset` (vision, text) or vectors of `dim` features."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if preset == "vision":
        x, y = torch.rand(rows, 3, 32, 32, generator=g), torch.randint(classes, (rows,), generator=g)
        model, what = small_cnn(classes), PRESETS["vision"]["what"]
    elif preset == "text":
        x = torch.randint(classes, (rows, 65), generator=g)
        x, y = x[:, :-1], x[:, 1:]  # next-token targets; the scorer takes the mean over tokens
        model = nn.Sequential(nn.Embedding(classes, dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, classes))
        what = PRESETS["text"]["what"].replace("MLP", f"MLP (width {dim})")
    else:
        x, y = torch.randn(rows, dim, generator=g), torch.randint(classes, (rows,), generator=g)
        model = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, classes))
        what = f"{dim}-feature vectors, a 2-layer MLP (width {4 * dim})"
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def train_step(batch) -> None:
        inputs, targets = to_device(batch, device)
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    scorer = CrossEntropyScorer(model, reference=copy.deepcopy(model).requires_grad_(False))
    return Setup(TensorDataset(x, y), scorer, model, train_step,
                 description=f"synthetic: {rows} rows of {what}, {classes} classes; "
                             "CrossEntropyScorer (learner + reference, online); SGD train step")


def from_factory(spec: str) -> Setup:
    """Call `module:function`; it returns a dict (dataset, scorer, optional model, train_step,
    collate_fn) or a tuple (dataset, scorer[, model[, train_step]])."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--factory must be module:function, got {spec!r}")
    out = getattr(importlib.import_module(module), name)()
    if isinstance(out, dict):
        unknown = set(out) - {"dataset", "scorer", "model", "train_step", "collate_fn"}
        if unknown or "dataset" not in out or "scorer" not in out:
            raise ValueError(f"factory {spec} must return dataset and scorer (optionally model, train_step, "
                             f"collate_fn); got keys {sorted(out)}")
        return Setup(description=f"factory {spec}", **out)
    if isinstance(out, (tuple, list)) and 2 <= len(out) <= 4:
        return Setup(*out, description=f"factory {spec}")
    raise ValueError(f"factory {spec} must return a dict or a tuple (dataset, scorer[, model[, train_step]]), "
                     f"got {type(out).__name__}")


def super_batch(b: int, filter_ratio: Optional[float], super_batch_size: Optional[int]) -> int:
    """B for b: CuratedLoader's rule, B = round(b / (1 - filter_ratio)), or the given super-batch size."""
    if super_batch_size is not None:
        if super_batch_size < b:
            raise ValueError(f"--super-batch-size must be >= --batch-size ({b}), got {super_batch_size}")
        return super_batch_size
    if not 0 <= filter_ratio < 1:
        raise ValueError(f"--filter-ratio must be in [0, 1), got {filter_ratio}")
    return max(b, round(b / (1 - filter_ratio)))


def _batches(loader: DataLoader) -> Iterator[Any]:
    while True:  # epochs back to back: the timed loads never hit a StopIteration
        yield from loader


def run_config(setup: Setup, b: int, B: int, selector_name: str, workers: int, device: torch.device,
               warmup: int, repeats: int, seed: int = 0) -> dict:
    """Median and spread (ms) of every stage for one configuration, the step costs and the break-even."""
    if len(setup.dataset) < B:
        raise ValueError(f"the dataset has {len(setup.dataset)} rows, fewer than the super-batch B={B}")
    selector = SELECTORS[selector_name]()
    generator = torch.Generator().manual_seed(seed)
    kw = dict(shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=True,
              collate_fn=setup.collate_fn, pin_memory=device.type == "cuda",
              generator=torch.Generator().manual_seed(seed))
    timings: dict[str, bench.Timing] = {}
    held: dict[str, Any] = {}

    def load(rows: int) -> bench.Timing:
        it = _batches(DataLoader(setup.dataset, batch_size=rows, **kw))
        return bench.measure(lambda: held.__setitem__("batch", next(it)), warmup=warmup, repeats=repeats)

    def score() -> None:
        out = setup.scorer(held["batch"], held["ids"]) if isinstance(setup.scorer, Scorer) else setup.scorer(held["batch"])
        held["scores"] = as_scores(out, B)

    timings["load_b"] = load(b)
    timings["load_B"] = load(B)  # leaves a super-batch of B rows in held["batch"] for the next stages
    held["ids"] = torch.arange(B)
    with torch.inference_mode(), bench.peak_memory(device) as score_memory:  # as the loader scores: no graph
        timings["score"] = bench.measure(score, warmup=warmup, repeats=repeats, device=device)
    draw = lambda: held.__setitem__("idx", selector(held["scores"], b, generator))  # noqa: E731
    timings["draw"] = bench.measure(draw, warmup=warmup, repeats=repeats, device=device)
    gather = lambda: held.__setitem__("sub", index_batch(held["batch"], torch.sort(held["idx"].cpu()).values))  # noqa: E731
    timings["gather"] = bench.measure(gather, warmup=warmup, repeats=repeats)
    with bench.peak_memory(device) as train_memory:
        if setup.train_step is not None:
            timings["train"] = bench.measure(lambda: setup.train_step(held["sub"]), warmup=warmup,
                                             repeats=repeats, device=device)
    train = timings["train"].median if "train" in timings else 0.0
    selecting = sum(timings[s].median for s in ("load_B", "score", "draw", "gather")) + train
    plain = timings["load_b"].median + train
    row: dict[str, Any] = {"b": b, "B": B, "selector": selector_name, "workers": workers, "rows": len(setup.dataset),
                           "warmup": warmup, "repeats": repeats, "setup": setup.description}
    for name, t in timings.items():
        row.update(t.row(name))
    row.update(step_ms=selecting, plain_step_ms=plain, overhead_ms=selecting - plain,
               overhead_share=(selecting - plain) / selecting if train else None,
               break_even=selecting / plain if train else None,
               **{f"score_{k}": v for k, v in score_memory.items()},
               **{f"train_{k}": v for k, v in train_memory.items() if setup.train_step is not None})
    return row


def format_row(row: dict) -> str:
    """The stage table of one configuration, as printed."""
    b, B = row["b"], row["B"]
    labels = {"load_B": f"load B={B} rows", "score": f"score B={B}", "draw": f"draw b={b} ({row['selector']})",
              "gather": f"gather b={b} rows", "train": f"train step on b={b}", "load_b": f"load b={b} rows (plain)"}
    lines = [f"b={b} B={B} selector={row['selector']} workers={row['workers']}",
             f"  {'stage':28} {'median ms':>10} {'IQR ms':>17}"]
    for stage in STAGES:
        if f"{stage}_ms" in row:
            iqr = f"{row[f'{stage}_q1_ms']:.3f}–{row[f'{stage}_q3_ms']:.3f}"
            lines.append(f"  {labels[stage]:28} {row[f'{stage}_ms']:10.3f} {iqr:>17}")
    lines.append(f"  step with selection {row['step_ms']:.3f} ms, plain step {row['plain_step_ms']:.3f} ms")
    if row["break_even"] is None:
        lines.append(f"  overhead {row['overhead_ms']:.3f} ms per step (no train step given: no share or break-even)")
    else:
        lines.append(f"  overhead {row['overhead_share']:.1%} of the step with selection; break-even "
                     f"{row['break_even']:.2f}x (each selected sample must be worth {row['break_even']:.2f} "
                     "plain ones at equal compute)")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """Stacked bars: the stages of the step with selection beside the plain step, per configuration."""
    colors = dict(zip(STAGES, ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:green", "tab:gray")))
    with bench.figure(path, figsize=(max(5, 1.6 * len(rows)), 4)) as (fig, ax):
        for i, row in enumerate(rows):
            for x, stages in ((i - 0.2, ("load_B", "score", "draw", "gather", "train")), (i + 0.2, ("load_b", "train"))):
                bottom = 0.0
                for s in stages:
                    if f"{s}_ms" in row:
                        label = s if i == 0 and (x < i or s == "load_b") else None
                        ax.bar(x, row[f"{s}_ms"], 0.35, bottom=bottom, color=colors[s], label=label)
                        bottom += row[f"{s}_ms"]
        ax.set_xticks(range(len(rows)), [f"b={r['b']} B={r['B']}\n{r['selector']} w={r['workers']}" for r in rows],
                      fontsize=7)
        ax.set_ylabel("ms per step (left: selecting, right: plain)")
        ax.legend(fontsize=7)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="curatedloader bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to run (a factory, or synthetic shapes)")
    what.add_argument("--factory", help="module:function returning (dataset, scorer[, model[, train_step]]) or a dict")
    what.add_argument("--preset", choices=sorted(PRESETS), help="synthetic vision or text shapes")
    what.add_argument("--rows", type=int, help="synthetic rows (default 4096, or the preset's)")
    what.add_argument("--dim", type=int, default=64, help="synthetic features (text: embedding width)")
    what.add_argument("--classes", type=int, help="synthetic classes (text: vocabulary); default 10 or the preset's")
    sweep = p.add_argument_group("sweep (every combination is measured)")
    sweep.add_argument("--batch-size", type=int, nargs="+", default=[64], help="b, the rows trained on")
    ratio = sweep.add_mutually_exclusive_group()
    ratio.add_argument("--filter-ratio", type=float, nargs="+", help="B = round(b / (1 - ratio)); default 0.8")
    ratio.add_argument("--super-batch-size", type=int, nargs="+", help="B itself")
    sweep.add_argument("--selector", nargs="+", default=["jest"], choices=sorted(SELECTORS))
    sweep.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader workers")
    p.add_argument("--device", help="cuda or cpu (default cuda when available); timings synchronise on CUDA")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per stage")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per stage")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="append one row per configuration (JSON lines) here")
    p.add_argument("--plot", type=Path, help="write a PNG of the stages here")
    args = p.parse_args(argv)
    if args.factory and (args.preset or args.rows or args.classes):
        p.error("--factory and synthetic shapes (--preset, --rows, --classes) exclude each other")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = PRESETS.get(args.preset, {})
    if args.factory:
        setup = from_factory(args.factory)
        if setup.model is not None:
            device = model_device(setup.model, device)
    else:
        rows, classes = args.rows or preset.get("rows", 4096), args.classes or preset.get("classes", 10)
        if rows < 1 or classes < 2 or args.dim < 1:
            p.error(f"--rows >= 1, --classes >= 2 and --dim >= 1 needed, got {rows}, {classes}, {args.dim}")
        setup = synthetic(rows, args.dim, classes, args.preset, device, args.seed)
    ratios = args.super_batch_size or args.filter_ratio or [0.8]
    print(bench.banner(device))
    print(f"{setup.description}; warm-up {args.warmup}, {args.repeats} repeats per stage, median and IQR\n")
    rows = []
    for b, r, name, workers in itertools.product(args.batch_size, ratios, args.selector, args.workers):
        B = super_batch(b, None, r) if args.super_batch_size else super_batch(b, r, None)
        row = run_config(setup, b, B, name, workers, device, args.warmup, args.repeats, args.seed)
        rows.append({**bench.context("curatedloader bench", device), **row})
        print(format_row(row) + "\n")
    if args.json:
        print("rows:", bench.write_rows(args.json, rows))
    if args.plot:
        print("plot:", plot(rows, args.plot))
    return 0
