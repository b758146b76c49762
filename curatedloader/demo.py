"""`curatedloader demo`: RHO-LOSS on noisy digits, no selection vs Uniform, TopK and JEST at equal trained samples.

scikit-learn's bundled digits (no download); 30% of the training labels replaced by a random other
class; a reference model trained on a small clean held-out split supplies the irreducible losses;
each learner trains on the same number of samples and is tested on clean labels.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from . import JEST, CuratedLoader, TopK, Uniform
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


@dataclass
class Run:
    name: str
    curve: list = field(default_factory=list)  # (trained samples, test accuracy)
    noisy_fraction: float = 0.0
    score: float = 0.0   # share of wall-clock spent in the scorer's forward passes
    select: float = 0.0  # share spent drawing the sub-batch and gathering its rows
    seconds: float = 0.0


def train_learner(name: str, split: Split, table: torch.Tensor, args, seed: int) -> Run:
    model = mlp(128, seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    selector = {"plain": None, "uniform": Uniform(), "topk": TopK(), "jest": JEST(temperature=args.temperature)}[name]
    scorer = None if selector is None else CrossEntropyScorer(model, reference_losses=table)
    loader = CuratedLoader(
        split.train, batch_size=args.batch_size, filter_ratio=args.filter_ratio, shuffle=True, seed=seed,
        scorer=scorer, selector=selector, drop_last=True,
    )
    run, trained, noisy, start = Run(name), 0, 0, time.perf_counter()
    while trained < args.samples:
        for x, y, idx in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            trained += len(y)
            noisy += int(split.noisy[idx].sum())
            if trained // args.eval_every != (trained - len(y)) // args.eval_every:
                run.curve.append((trained, accuracy(model, split.test)))
            if trained >= args.samples:
                break
    run.seconds = time.perf_counter() - start
    stats = loader.stats
    run.noisy_fraction = noisy / trained
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
    p.add_argument("--samples", type=int, default=12000, help="trained samples per run")
    p.add_argument("--eval-every", type=int, default=2400, help="trained samples between evaluations")
    p.add_argument("--out", type=Path, default=Path("demo_curve.png"), help="where to write the plot")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # small models: threads cost more than they give, and runs stay reproducible

    methods = ("plain", "uniform", "topk", "jest")
    runs: dict[str, list[Run]] = {m: [] for m in methods}
    for seed in range(args.seed, args.seed + args.seeds):
        split = digits(args.noise, seed)
        reference = train_reference(split.holdout, seed)
        table = irreducible_losses(reference, split.train)
        print(f"seed {seed}: reference (clean holdout of {len(split.holdout)}) test accuracy "
              f"{accuracy(reference, split.test):.3f}; train {len(split.train)}, "
              f"{int(split.noisy.sum())} labels flipped")
        for m in methods:
            runs[m].append(train_learner(m, split, table, args, seed))

    print(f"\ntest accuracy (mean ± spread over {args.seeds} seeds) at equal trained samples, "
          f"b={args.batch_size}, filter_ratio={args.filter_ratio}:")
    checkpoints = [s for s, _ in runs["uniform"][0].curve]
    header = f"{'method':8} " + " ".join(f"{s:>11}" for s in checkpoints) + "  noisy%  score%  select%  seconds"
    print(header)
    for m in methods:
        cells = " ".join(f"{mu:.3f}±{sd:.3f}" for mu, sd in zip(*accuracy_spread(runs[m])))
        mean = lambda key: sum(getattr(r, key) for r in runs[m]) / len(runs[m])  # noqa: E731
        print(f"{m:8} {cells}  {100 * mean('noisy_fraction'):6.1f}  {100 * mean('score'):6.1f}  "
              f"{100 * mean('select'):7.1f}  {mean('seconds'):7.1f}")
    print(f"plain: no selection (a DataLoader); uniform: b of B at random (scores computed, unused).\n"
          f"noisy% = share of flipped labels among trained samples (the data holds {100 * args.noise:.0f}%); "
          "score% and select% = share of wall-clock (training included) spent scoring super-batches and "
          "selecting from them: the selection overhead; seconds = wall-clock of the run")
    plot(runs, args.out)
    print(f"curve written to {args.out}")
    return 0


def accuracy_spread(runs: list[Run]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over seeds of the test accuracy at each checkpoint."""
    accs = torch.tensor([[a for _, a in r.curve] for r in runs])
    return accs.mean(0), accs.std(0, unbiased=False)


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rs in runs.items():
        xs = [s for s, _ in rs[0].curve]
        mu, sd = accuracy_spread(rs)
        ax.plot(xs, mu, label=name)
        ax.fill_between(xs, mu - sd, mu + sd, alpha=0.2)
    ax.set(xlabel="trained samples", ylabel="test accuracy (clean labels)",
           title="Noisy digits (30% flipped): selection at equal trained samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
