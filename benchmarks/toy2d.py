"""2-D reproduction of "Autoguided Online Data Curation for Diffusion Model Training" (Pais et al. 2025).

A small MLP denoiser learns a 2-D Gaussian mixture of thin components laid out like two trees (the kind
of toy of Karras et al. 2024, with its exact log-density). A smaller, shorter-trained denoiser is both
the JEST reference and the autoguidance guide. Runs, each sampled with and without autoguidance:

    uniform      batches of b, no selection
    uniform-B    b of each super-batch of B at random (loads B per step, like the selectors)
    JEST         learnability selection throughout
    early-AJEST  learnability selection until the learner beats the reference (`Early`)

Metrics: the exact mean log-likelihood of generated samples under the true density (fidelity) and the
sliced Wasserstein distance to fresh true samples (coverage), at equal trained samples (same step) and
at equal training time (that of `uniform`; loading, scoring and selection included). Time is the CPU time
of the single-threaded process (`num_workers=0`): the wall-clock of a quiet machine, but unlike it not
inflated by other tenants of a shared one.

    python benchmarks/toy2d.py            # 4 seeds, about 5 minutes on 2 CPU cores
    python benchmarks/toy2d.py --quick    # 2 seeds, short training: a smoke run under a minute

Rows (OUT/toy2d.jsonl) and plots (OUT/toy2d_*.png) go to `--out` (default out/, never the committed
PNGs beside this script: after a full run, copy its plots over them on purpose).
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from curatedloader import JEST, Always, CuratedLoader, Early, Uniform
from curatedloader.bench import banner, context, figure, output_args, write_rows
from curatedloader.scoring import DiffusionScorer
from curatedloader.scoring.diffusion import add_noise, edm_weight, sample_noise

SIGMA_DATA, P_MEAN, P_STD = 0.5, -2.0, 1.5  # lower noise levels than EDM's images: the detail is thin
METHODS = ("uniform", "uniform-B", "JEST", "early-AJEST")


@dataclass
class Config:
    seeds: int = 4
    steps: int = 3000          # learner training steps (each on b samples)
    ref_steps: int = 750       # reference/guide training steps (1/4 as long, and a smaller net)
    batch_size: int = 256      # b
    filter_ratio: float = 0.8  # B = b / (1 - filter_ratio) = 1280
    evals: int = 8             # evaluation points along training
    eval_samples: int = 2048
    sampler_steps: int = 32
    guidance: tuple = (1.0, 1.5, 2.0, 3.0)  # w = 1 is no guidance
    lr: float = 1e-2
    ema: float = 0.99
    data_size: int = 1 << 17


QUICK = Config(seeds=2, steps=400, ref_steps=100, evals=4, eval_samples=1024, sampler_steps=16, guidance=(1.0, 2.0))


# ---- data: a tree-shaped mixture of thin Gaussians, with its exact density ------------------------


class TreeMixture:
    """Gaussians stretched along the branches of two binary trees; weights shrink with depth.

    >>> p = TreeMixture(); x = p.sample(8, torch.Generator().manual_seed(0)); p.log_prob(x).shape
    torch.Size([8])
    """

    def __init__(self, depth: int = 6, per_branch: int = 6, seed: int = 2):
        rng = np.random.default_rng(seed)
        mu, cov, w = [], [], []

        def grow(level: int, start: np.ndarray, angle: float) -> None:
            if level == depth:
                return
            length = 0.32 * 0.8**level * (1 + 0.15 * rng.standard_normal())
            along, across = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
            for t in np.linspace(0.1, 0.9, per_branch):
                mu.append(start + t * length * along)
                cov.append((0.6 * length / per_branch) ** 2 * np.outer(along, along)
                           + (0.012 * 0.85**level) ** 2 * np.outer(across, across))
                w.append(length * 0.5**level * rng.uniform(0.5, 1.5))
            for sign in (1, -1):
                grow(level + 1, start + length * along, angle + sign * 0.75**level * rng.uniform(0.4, 0.8))

        grow(0, np.array([0.05, 0.05]), np.pi / 4)
        grow(0, np.array([-0.05, -0.05]), 5 * np.pi / 4)
        self.mu = torch.tensor(np.array(mu))                      # [K, 2] float64
        self.cov = torch.tensor(np.array(cov))                    # [K, 2, 2]
        self.weight = torch.tensor(w) / sum(w)                    # [K]
        self.chol = torch.linalg.cholesky(self.cov)
        self.prec = torch.linalg.inv(self.cov)
        self.log_norm = self.weight.log() - math.log(2 * math.pi) - 0.5 * torch.logdet(self.cov)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weight, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, 1, generator=generator, dtype=torch.float64)
        return (self.mu[k] + (self.chol[k] @ z).squeeze(-1)).float()

    def log_prob(self, x: Tensor, chunk: int = 2048) -> Tensor:
        """Exact log-density (float64) of each row of x [n, 2]."""
        out = []
        a, b, c = self.prec[:, 0, 0], self.prec[:, 0, 1], self.prec[:, 1, 1]
        for xc in x.double().split(chunk):
            dx, dy = xc[:, :1] - self.mu[:, 0], xc[:, 1:] - self.mu[:, 1]  # [n, K]
            mahalanobis = a * dx**2 + 2 * b * dx * dy + c * dy**2
            out.append(torch.logsumexp(self.log_norm - 0.5 * mahalanobis, dim=1))
        return torch.cat(out)


class Points(Dataset):
    """Rows of a [N, 2] array. With `collate` below a super-batch loads in about a millisecond, so
    timings measure scoring and selection rather than Python's per-sample overhead."""

    def __init__(self, x: Tensor):
        self.x = x.numpy()

    def __getitem__(self, i: int) -> np.ndarray:
        return self.x[i]

    def __len__(self) -> int:
        return len(self.x)


def collate(rows: list) -> tuple[Tensor]:
    return (torch.from_numpy(np.stack(rows)),)


# ---- model, training, sampling ---------------------------------------------------------------------


class Denoiser(nn.Module):
    """EDM-preconditioned MLP: D(x; σ) = c_skip·x + c_out·F(c_in·x, ln σ / 4)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(3, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 2))

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = sigma.reshape(-1, 1).to(x.dtype)
        r = (s**2 + SIGMA_DATA**2).sqrt()
        f = self.net(torch.cat([x / r, s.log().expand(len(x), 1) / 4], dim=1))
        return SIGMA_DATA**2 / r**2 * x + s * SIGMA_DATA / r * f


def heun_sample(denoise, x: Tensor, steps: int, sigma_min: float = 0.002, sigma_max: float = 5.0,
                rho: float = 7.0) -> Tensor:
    """EDM's deterministic Heun sampler from x ~ N(0, sigma_max²)."""
    i = torch.arange(steps, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, dtype=torch.float64)]).tolist()
    sig = lambda s: torch.full((len(x),), s)  # noqa: E731
    for j, (cur, nxt) in enumerate(zip(t[:-1], t[1:])):
        d = (x - denoise(x, sig(cur))) / cur
        x_next = x + (nxt - cur) * d
        if nxt > 0:
            x_next = x + (nxt - cur) * 0.5 * (d + (x_next - denoise(x_next, sig(nxt))) / nxt)
        x = x_next
    return x


def sliced_wasserstein(a: Tensor, b: Tensor, generator: torch.Generator, n_proj: int = 128) -> float:
    """Mean over random directions of the 1-D Wasserstein-1 distance between projections."""
    theta = torch.randn(2, n_proj, generator=generator, dtype=a.dtype)
    theta /= theta.norm(dim=0)
    pa, pb = (a @ theta).sort(0).values, (b @ theta).sort(0).values
    return float((pa - pb).abs().mean())


@dataclass
class Record:
    step: int
    trained: int
    seconds: float
    loglik: dict  # w -> mean log p of generated samples
    sw: dict      # w -> sliced Wasserstein to fresh true samples
    samples: dict  # w -> generated samples (last record only)


class Evaluator:
    """Samples a model (optionally guided by `guide`) from fixed initial noise and scores the samples."""

    def __init__(self, target: TreeMixture, cfg: Config, seed: int):
        g = torch.Generator().manual_seed(seed + 10_000)
        self.target, self.cfg = target, cfg
        self.x_init = 5.0 * torch.randn(cfg.eval_samples, 2, generator=g)
        self.truth = target.sample(cfg.eval_samples, g)
        self.proj_seed = seed + 20_000

    def distance(self, x: Tensor) -> float:
        """Sliced Wasserstein from x to this seed's fresh true samples, on fixed directions."""
        return sliced_wasserstein(x, self.truth, torch.Generator().manual_seed(self.proj_seed))

    @torch.inference_mode()
    def __call__(self, model: nn.Module, guide: nn.Module, keep_samples: bool = False) -> tuple[dict, dict, dict]:
        loglik, sw, samples = {}, {}, {}
        for w in self.cfg.guidance:
            denoise = model if w == 1 else (lambda x, s, w=w: guide(x, s).lerp(model(x, s), w))
            x = heun_sample(denoise, self.x_init, self.cfg.sampler_steps)
            loglik[w] = float(self.target.log_prob(x).mean())
            sw[w] = self.distance(x)
            if keep_samples:
                samples[w] = x
        return loglik, sw, samples


def train(model: nn.Module, data: Points, steps: int, cfg: Config, seed: int, method: str = "uniform",
          reference: nn.Module | None = None, evaluator: Evaluator | None = None):
    """Train `model` for `steps` steps of b samples; returns (EMA model, loader, records)."""
    scorer, selector, schedule = None, None, None
    if method == "uniform-B":  # loads B and keeps b at random; scoring costs nothing
        scorer, selector = (lambda batch: torch.zeros(len(batch[0]))), Uniform()
    elif method in ("JEST", "early-AJEST"):
        scorer = DiffusionScorer(model, reference, sigma_data=SIGMA_DATA, p_mean=P_MEAN, p_std=P_STD,
                                 return_noise=True)
        selector, schedule = JEST(), (Early() if method == "early-AJEST" else Always())
    loader = CuratedLoader(data, batch_size=cfg.batch_size, filter_ratio=cfg.filter_ratio, scorer=scorer,
                           selector=selector, schedule=schedule, seed=seed, shuffle=True, drop_last=True,
                           collate_fn=collate)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = copy.deepcopy(model).requires_grad_(False)
    noise_gen = torch.Generator().manual_seed(seed + 30_000)
    eval_at = {round(steps * (i + 1) / cfg.evals) for i in range(cfg.evals)} if evaluator else set()
    step, seconds, records = 0, 0.0, []
    start = time.process_time()
    while step < steps:
        for x, *noise in loader:
            # selected batches carry the σ and ε they were scored with; the others draw their own
            sigma, eps = noise or sample_noise(x, P_MEAN, P_STD, noise_gen)
            err = (model(add_noise(x, sigma, eps), sigma) - x) ** 2
            loss = (edm_weight(sigma, SIGMA_DATA) * err.mean(1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # EMA with warm-up, so short runs are not stuck near the init
                decay = min(cfg.ema, (1 + step) / (10 + step))
                for pe, p in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(p, 1 - decay)
            step += 1
            if step in eval_at:  # the clock stops while evaluating
                seconds += time.process_time() - start
                last = step == steps
                loglik, sw, samples = evaluator(ema, reference, keep_samples=last)
                records.append(Record(step, loader.stats.trained, seconds, loglik, sw, samples))
                start = time.process_time()
            if step == steps:
                break
    return ema, loader, records


# ---- experiment, table, plots ---------------------------------------------------------------------


def run(cfg: Config) -> dict:
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a shared machine
    target = TreeMixture()
    results, floor = {m: [] for m in METHODS}, []
    for seed in range(cfg.seeds):
        data = Points(target.sample(cfg.data_size, torch.Generator().manual_seed(seed)))
        torch.manual_seed(seed)
        init = Denoiser(width=64, depth=4)
        ref_t0 = time.process_time()
        reference, _, _ = train(Denoiser(width=32, depth=2), data, cfg.ref_steps, cfg, seed)
        ref_seconds = time.process_time() - ref_t0
        evaluator = Evaluator(target, cfg, seed)
        fresh = target.sample(cfg.eval_samples, torch.Generator().manual_seed(seed + 40_000))
        floor.append((float(target.log_prob(fresh).mean()), evaluator.distance(fresh)))
        for method in METHODS:
            _, loader, records = train(copy.deepcopy(init), data, cfg.steps, cfg, seed, method, reference, evaluator)
            switch = loader.schedule.stopped_at if isinstance(loader.schedule, Early) else None
            results[method].append(dict(records=records, stats=loader.stats, switch=switch, ref_seconds=ref_seconds))
            r = records[-1]
            print(f"seed {seed} {method:12s} {r.seconds:6.1f}s  loglik(w=1) {r.loglik[1.0]:7.3f}  "
                  f"sw(w=1) {r.sw[1.0]:.4f}" + (f"  switched off at step {switch}" if method == "early-AJEST" else ""),
                  flush=True)
    return dict(cfg=cfg, target=target, results=results, floor=floor)


def at_time(records: list[Record], budget: float) -> Record:
    """The last evaluation reached within `budget` seconds of training (the first if none is)."""
    within = [r for r in records if r.seconds <= budget * 1.02]  # 2%: timer noise at the budget itself
    return within[-1] if within else records[0]


def fmt(values: list[float], digits: int = 3) -> str:
    v = np.array(values)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def table(out: dict) -> str:
    cfg, results = out["cfg"], out["results"]
    budgets = [run["records"][-1].seconds for run in results["uniform"]]
    final = {m: [run["records"][-1] for run in runs] for m, runs in results.items()}
    timed = {m: [at_time(run["records"], t) for run, t in zip(runs, budgets)] for m, runs in results.items()}
    lines = [
        "| method | w | log-lik, equal samples ↑ | SW, equal samples ↓ | log-lik, equal time ↑ | SW, equal time ↓ "
        "| steps in equal time | CPU ms/step (wall ms scoring+selecting) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        ms = [1e3 * run["records"][-1].seconds / cfg.steps for run in runs]
        ms_sel = [(run["stats"].score_ms + run["stats"].select_ms) / cfg.steps for run in runs]
        for w in cfg.guidance:
            lines.append(
                f"| {method} | {w:g} | {fmt([r.loglik[w] for r in final[method]])} "
                f"| {fmt([r.sw[w] for r in final[method]], 4)} | {fmt([r.loglik[w] for r in timed[method]])} "
                f"| {fmt([r.sw[w] for r in timed[method]], 4)} | {np.mean([r.step for r in timed[method]]):.0f} "
                f"| {np.mean(ms):.2f} ({np.mean(ms_sel):.2f}) |"
            )
    lines += [
        "",
        "Paired against the plain baseline (`uniform`, w = 1) of the same seed (same data, init and sampler "
        "noise): mean ± std of the difference, and in how many seeds it is better.",
        "",
        "| method | w | Δ log-lik, equal samples | Δ SW, equal samples | Δ log-lik, equal time | Δ SW, equal time |",
        "|---|---|---|---|---|---|",
    ]
    for method in results:
        for w in cfg.guidance:
            if (method, w) == ("uniform", 1.0):
                continue
            cells = []
            for recs in (final, timed):
                for metric, sign, digits in (("loglik", 1, 3), ("sw", -1, 4)):
                    base = np.array([getattr(r, metric)[1.0] for r in recs["uniform"]])
                    d = np.array([getattr(r, metric)[w] for r in recs[method]]) - base
                    cells.append(f"{fmt(d, digits)} ({int((sign * d > 0).sum())}/{len(d)})")
            lines.append(f"| {method} | {w:g} | " + " | ".join(cells) + " |")
    switches = [run["switch"] for run in results["early-AJEST"]]
    ref_s = np.mean([run["ref_seconds"] for run in results["uniform"]])
    floor_ll, floor_sw = np.mean(out["floor"], axis=0)
    lines += [
        "",
        f"{cfg.seeds} seeds (mean ± std); {cfg.steps} steps of b={cfg.batch_size}, "
        f"B={round(cfg.batch_size / (1 - cfg.filter_ratio))}; {cfg.eval_samples} samples, Heun {cfg.sampler_steps} "
        f"steps. True samples score log-lik {floor_ll:.3f} and SW {floor_sw:.4f} (the sampling-noise floor). "
        f"Equal time = the training CPU time of `uniform` ({np.mean(budgets):.1f} s on average), evaluated at the "
        f"last of {cfg.evals} evaluation points within it. early-AJEST switched off at steps {switches}. "
        f"Training the reference/guide took {ref_s:.1f} s (needed by autoguidance and the selectors alike; not "
        "counted above).",
    ]
    return "\n".join(lines)


def plot(out: dict, folder: Path) -> list[Path]:
    cfg, results, target = out["cfg"], out["results"], out["target"]
    w_ag = 2.0 if 2.0 in cfg.guidance else cfg.guidance[-1]
    colors = dict(zip(METHODS, ("black", "tab:blue", "tab:red", "tab:green")))
    curves, samples = folder / "toy2d_curves.png", folder / "toy2d_samples.png"
    with figure(curves, 2, 2, figsize=(11, 8)) as (fig, axes):
        for (row, metric, label), (col, xkey, xlabel) in [
            ((r, m, l), (c, x, xl))
            for r, m, l in ((0, "loglik", "mean log-likelihood ↑"), (1, "sw", "sliced Wasserstein ↓"))
            for c, x, xl in ((0, "trained", "trained samples"), (1, "seconds", "training CPU seconds (scoring included)"))
        ]:
            ax = axes[row, col]
            for method, runs in results.items():
                for w, style in ((1.0, "-"), (w_ag, "--")):
                    xs = np.mean([[getattr(r, xkey) for r in run["records"]] for run in runs], axis=0)
                    ys = np.array([[getattr(r, metric)[w] for r in run["records"]] for run in runs])
                    ax.plot(xs, ys.mean(0), style, color=colors[method], label=f"{method}, w={w:g}")
                    ax.fill_between(xs, ys.min(0), ys.max(0), color=colors[method], alpha=0.1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle("toy2d: solid no guidance, dashed autoguidance; band = min..max over seeds")

    grid = torch.linspace(-1.6, 1.6, 300)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    logp = target.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).reshape(300, 300)
    with figure(samples, 2, len(METHODS), figsize=(4 * len(METHODS), 8), dpi=90) as (fig, axes):
        for j, method in enumerate(METHODS):
            for i, w in enumerate((1.0, w_ag)):
                ax = axes[i, j]
                ax.contourf(gx, gy, logp.clamp_min(-8), levels=20, cmap="Greys")
                x = results[method][0]["records"][-1].samples[w][:2000]
                ax.scatter(x[:, 0], x[:, 1], s=1, color=colors[method])
                ax.set_title(f"{method}, w={w:g}")
                ax.set_xlim(-1.6, 1.6), ax.set_ylim(-1.6, 1.6), ax.set_aspect("equal"), ax.axis("off")
    return [curves, samples]


def rows(out: dict) -> list[dict]:
    """One row per seed, method and guidance weight: the final evaluation and the step costs."""
    cfg = out["cfg"]
    setup = {"steps": cfg.steps, "b": cfg.batch_size, "B": round(cfg.batch_size / (1 - cfg.filter_ratio))}
    return [
        {"method": method, "w": w, "seed": seed, **setup, "loglik": run["records"][-1].loglik[w],
         "sw": run["records"][-1].sw[w], "cpu_ms_per_step": 1e3 * run["records"][-1].seconds / cfg.steps,
         "score_select_ms_per_step": (run["stats"].score_ms + run["stats"].select_ms) / cfg.steps,
         "switch": run["switch"]}
        for method, runs in out["results"].items() for seed, run in enumerate(runs) for w in cfg.guidance
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, short training: a smoke run")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 4, quick 2)")
    output_args(parser, "toy2d")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    print(banner())
    cfg = QUICK if args.quick else Config()
    if args.seeds is not None:
        if args.seeds < 2:
            raise ValueError(f"--seeds must be >= 2 (the table shows a spread), got {args.seeds}")
        cfg.seeds = args.seeds
    t0 = time.perf_counter()
    out = run(cfg)
    print()
    print(table(out))
    print("rows:", write_rows(args.out / "toy2d.jsonl", [{**context("toy2d"), **r} for r in rows(out)]))
    if not args.no_plots:
        print("plots:", *plot(out, args.out))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
