"""`curatedloader demo`: selection on noisy digits at equal trained samples and at equal compute.

scikit-learn's bundled digits (no download); 30% of the training labels replaced by a random other
class; a reference model trained on a small clean held-out split supplies the irreducible losses.
Methods: plain batches, RHO-LOSS super-batch selection (Uniform, TopK, JEST), and selection from
recorded training losses (history: InfoBatch). Every learner is tested on clean labels after the same
number of trained samples, and after the same training compute: the process CPU time that plain
batches take for those samples (loading, scoring and selecting included; evaluation excluded).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from . import JEST, CuratedLoader, LossHistory, TopK, Uniform, bench
from .scoring import CrossEntropyScorer, irreducible_losses


@dataclass
class Split:
    train: TensorDataset   # (x, noisy label, sample index)
    noisy: torch.Tensor    # bool per training sample
    holdout: TensorDataset
    test: TensorDataset


def digits(noise: float, seed: int) -> Split:
    from sklearn.datasets import load_digits

    data = load_digits()
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=g)
    test, holdout, train = perm[:500], perm[500:800], perm[800:]
    noisy = torch.rand(len(train), generator=g) < noise
    shift = torch.randint(1, 10, (len(train),), generator=g)  # a uniformly random *other* class
    labels = torch.where(noisy, (y[train] + shift) % 10, y[train])
    return Split(
        TensorDataset(x[train], labels, torch.arange(len(train))), noisy,
        TensorDataset(x[holdout], y[holdout]), TensorDataset(x[test], y[test]),
    )


def mlp(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train_reference(data: TensorDataset, seed: int, steps: int = 300) -> nn.Module:
    model = mlp(64, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    x, y = data.tensors
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


METHODS = ("plain", "uniform", "topk", "jest", "history", "learnability")


@dataclass
class Run:
    name: str
    curve: list = field(default_factory=list)  # (trained samples, training CPU seconds, test accuracy)
    noisy_fraction: float = 0.0
    score: float = 0.0   # share of wall-clock spent in the scorer's forward passes
    select: float = 0.0  # share spent drawing the sub-batch and gathering its rows
    seconds: float = 0.0
    cpu_per_sample: float = 0.0  # training CPU seconds per trained sample, up to `samples`
    at_samples: float = 0.0      # test accuracy after `samples` trained samples
    at_budget: float = 0.0       # test accuracy after `budget` CPU seconds of training


def make_loader(name: str, split: Split, table: torch.Tensor, model: nn.Module, args, seed: int) -> CuratedLoader:
    kw = dict(batch_size=args.batch_size, shuffle=True, seed=seed, drop_last=True)
    if name == "history":  # prune half the well-learned samples of each epoch; the last eighth on full data
        epochs = max(1, round(args.samples / len(split.train)))
        return CuratedLoader(split.train, history=LossHistory(prune=args.prune, epochs=epochs, anneal=0.125), **kw)
    if name == "learnability":  # prune most low-learnability samples (recorded loss - reference loss), no rescaling
        return CuratedLoader(split.train, history=LossHistory(prune=args.prune_learnability, reference=table,
                                                              rescale=False), **kw)
    selector = {"plain": None, "uniform": Uniform(), "topk": TopK(), "jest": JEST(temperature=args.temperature)}[name]
    scorer = None if selector is None else CrossEntropyScorer(model, reference_losses=table)
    return CuratedLoader(split.train, filter_ratio=args.filter_ratio, scorer=scorer, selector=selector, **kw)


def train_learner(name: str, split: Split, table: torch.Tensor, args, seed: int,
                  budget: float | None = None) -> Run:
    """Train until `args.samples` trained samples and, if given, `budget` CPU seconds of training have
    both passed; evaluate every `args.eval_every` samples and at each of those two points."""
    model = mlp(128, seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = make_loader(name, split, table, model, args, seed)
    run, trained, noisy, start = Run(name), 0, 0, time.perf_counter()
    plain, budget = budget is None, 0.0 if budget is None else budget
    cpu, mark = 0.0, time.process_time()  # training CPU: loading, scoring, selecting, steps; not evaluation

    def evaluate() -> float:
        acc = accuracy(model, split.test)
        run.curve.append((trained, cpu, acc))
        return acc

    while trained < args.samples or cpu < budget:
        for batch in loader:
            x, y, idx = batch[:3]
            opt.zero_grad()
            if loader.history is not None:
                losses = nn.functional.cross_entropy(model(x), y, reduction="none")
                loader.record(losses)
                (losses * batch[3]).mean().backward()
            else:
                nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            before, trained = trained, trained + len(y)
            if before < args.samples:
                noisy += int(split.noisy[idx].sum())
            now = time.process_time()
            cpu, crossed = cpu + now - mark, False
            if before < args.samples <= trained:
                run.at_samples, run.cpu_per_sample, crossed = evaluate(), cpu / trained, True
            if cpu >= budget and not run.at_budget and not plain:
                run.at_budget, crossed = run.curve[-1][2] if crossed else evaluate(), True
            if not crossed and trained // args.eval_every != before // args.eval_every:
                evaluate()
            mark = time.process_time()
            if trained >= args.samples and cpu >= budget:
                break
    run.seconds = time.perf_counter() - start
    if plain:  # its own budget: the CPU it took for `samples`
        run.at_budget = run.at_samples
    stats = loader.stats
    run.noisy_fraction = noisy / min(trained, args.samples)
    run.score, run.select = stats.score_ms / stats.step_ms, stats.select_ms / stats.step_ms
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="curatedloader demo", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="first seed; runs use seed, seed+1, ...")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds to average")
    p.add_argument("--noise", type=float, default=0.3, help="fraction of training labels flipped")
    p.add_argument("--batch-size", type=int, default=32, help="b, the trained sub-batch")
    p.add_argument("--filter-ratio", type=float, default=0.8, help="B = b / (1 - filter_ratio)")
    p.add_argument("--temperature", type=float, default=0.25, help="JEST softmax temperature")
    p.add_argument("--prune", type=float, default=0.5, help="history: share of well-learned samples pruned")
    p.add_argument("--prune-learnability", type=float, default=0.95,
                   help="learnability: share of low-learnability samples pruned")
    p.add_argument("--samples", type=int, default=12000, help="trained samples per run")
    p.add_argument("--eval-every", type=int, default=2400, help="trained samples between evaluations")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--out", type=Path, default=Path("demo_curve.png"), help="where to write the plot")
    p.add_argument("--json", type=Path, help="append one result row per method (JSON lines, with device and commit)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # small models: threads cost more than they give, and runs stay reproducible

    methods = ["plain", *(m for m in args.methods if m != "plain")]  # plain sets the compute budget
    runs: dict[str, list[Run]] = {m: [] for m in methods}
    for seed in range(args.seed, args.seed + args.seeds):
        split = digits(args.noise, seed)
        reference = train_reference(split.holdout, seed)
        table = irreducible_losses(reference, split.train)
        print(f"seed {seed}: reference (clean holdout of {len(split.holdout)}) test accuracy "
              f"{accuracy(reference, split.test):.3f}; train {len(split.train)}, "
              f"{int(split.noisy.sum())} labels flipped")
        budget = None
        for m in methods:
            run = train_learner(m, split, table, args, seed, budget)
            budget = run.curve[-1][1] if m == "plain" else budget
            runs[m].append(run)

    print(f"\nclean test accuracy (mean ± spread over {args.seeds} seeds), b={args.batch_size}, "
          f"filter_ratio={args.filter_ratio}, {100 * args.noise:.0f}% labels flipped:")
    print(f"{'method':8} {'equal samples':>13} {'equal CPU':>13}  {'CPU/sample':>10}  noisy%  score%  select%  seconds")
    rows = []
    for m in methods:
        rs = runs[m]
        mean = lambda key: sum(getattr(r, key) for r in rs) / len(rs)  # noqa: E731
        cells = [f"{mu:.3f}±{sd:.3f}" for mu, sd in (spread([getattr(r, k) for r in rs]) for k in ("at_samples", "at_budget"))]
        cost = mean("cpu_per_sample") / (sum(r.cpu_per_sample for r in runs["plain"]) / len(rs))
        print(f"{m:8} {cells[0]:>13} {cells[1]:>13}  {cost:9.2f}×  {100 * mean('noisy_fraction'):6.1f}  "
              f"{100 * mean('score'):6.1f}  {100 * mean('select'):7.1f}  {mean('seconds'):7.1f}")
        rows.append({**bench.context("curatedloader demo"), "noise": args.noise, "method": m, "seeds": args.seeds,
                     "samples": args.samples, "b": args.batch_size, "filter_ratio": args.filter_ratio,
                     "acc_equal_samples": mean("at_samples"), "acc_equal_cpu": mean("at_budget"),
                     "cpu_per_sample_vs_plain": cost, "noisy_pct": 100 * mean("noisy_fraction")})
    print(f"equal samples: after {args.samples} trained samples; equal CPU: after the training CPU time plain "
          "batches took for them (loading, scoring, selecting and steps; evaluation excluded); CPU/sample: training "
          "CPU per trained sample relative to plain.\nplain: no selection (a DataLoader); uniform: b of B at random "
          "(scores computed, unused); history: InfoBatch pruning from recorded losses, no scoring; learnability: pruning by recorded loss - "
          "reference loss, no scoring.\n"
          f"noisy% = share of flipped labels among trained samples (the data holds {100 * args.noise:.0f}%); "
          "score% and select% = share of wall-clock spent scoring super-batches and selecting from them")
    plot(runs, args.out, args.noise)
    print(f"curves written to {args.out}")
    if args.json:
        print("rows:", bench.write_rows(args.json, rows))
    return 0


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation over seeds."""
    t = torch.tensor(values)
    return t.mean().item(), t.std(unbiased=False).item()


def plot(runs: dict, path: Path, noise: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, rs in runs.items():
        for ax, column in zip(axes, (0, 1)):  # one seed's curve per method would hide the spread: mean of seeds
            xs = torch.tensor([[float(p[column]) for p in r.curve] for r in rs if len(r.curve) == len(rs[0].curve)])
            ys = torch.tensor([[p[2] for p in r.curve] for r in rs if len(r.curve) == len(rs[0].curve)])
            line, = ax.plot(xs.mean(0), ys.mean(0), label=name, marker=".")
            ax.fill_between(xs.mean(0), ys.mean(0) - ys.std(0, unbiased=False), ys.mean(0) + ys.std(0, unbiased=False),
                            alpha=0.15, color=line.get_color())
    budget = sum(r.curve[-1][1] for r in runs["plain"]) / len(runs["plain"])
    axes[1].axvline(budget, color="grey", linestyle=":", label="plain's CPU budget")
    axes[0].set(xlabel="trained samples", ylabel="test accuracy (clean labels)", title="at equal trained samples")
    axes[1].set(xlabel="training CPU seconds (loading, scoring, selecting, steps)", title="at equal compute")
    axes[1].legend()
    fig.suptitle(f"Digits, {100 * noise:.0f}% labels flipped")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
