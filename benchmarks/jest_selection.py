"""Whole pairwise JEST selection (16 chunks, filter 0.8, d=768, bf16): time and peak extra memory.

Three ways to get the running row/column sums of S: ours (`sigmoid_pair_sums`, Triton), the careful
PyTorch version (the op's reference: only the newly chosen columns of S, [B, b/16] at a time), and
the materialised B×B matrix S (built once per selection, then indexed) where it fits. Every way runs
the same `chunked_selection` loop with the same seed. Also checks ours against PyTorch on one chunk and
that two runs of ours pick the same samples. Writes a table (stdout) and a PNG of time vs B.

    python benchmarks/jest_selection.py                      # needs a CUDA GPU
    TRITON_INTERPRET=1 python benchmarks/jest_selection.py --cpu-smoke   # tiny sizes, checks the script
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from curatedloader.scoring import PairScores
from curatedloader.selection import chunked_selection
from curatedloader.selection import gumbel_topk

AIMS = {32768: "5 ms", 163840: "80 ms, < 1 GiB"}  # H100 aims from issues 6 and 16
PARAMS = dict(learner_scale=10.0, learner_bias=-10.0, reference_scale=12.0, reference_bias=-9.0)


def embeddings(B: int, d: int, device: str, dtype: torch.dtype) -> dict:
    g = torch.Generator(device).manual_seed(0)
    x = F.normalize(torch.randn(4, B, d, device=device, generator=g), dim=-1).to(dtype)
    return dict(learner_img=x[0], learner_txt=x[1], reference_img=x[2], reference_txt=x[3])


def materialised_sums(s: PairScores):
    """pair_sums from the whole B×B matrix S, built once."""
    y = 2 * torch.eye(len(s), device=s.learner_img.device) - 1

    def loss(img, txt, scale, bias):
        return F.softplus(-y * (scale * (img @ txt.T).float() + bias))

    S = loss(s.learner_img, s.learner_txt, s.learner_scale, s.learner_bias) - \
        loss(s.reference_img, s.reference_txt, s.reference_scale, s.reference_bias)
    return lambda new: (S[:, new].sum(1), S[new].sum(0))


def select(s: PairScores, way: str, k: int, n_chunks: int) -> torch.Tensor:
    pair_sums = materialised_sums(s) if way == "materialised" else s.pair_sums
    generator = torch.Generator().manual_seed(0)
    draw = lambda logits, m: gumbel_topk(logits, m, generator)  # noqa: E731  temperature 1
    return chunked_selection(s.values(), pair_sums, k, n_chunks, draw)


def measure(fn, cuda: bool, reps: int) -> tuple[float, float, object]:
    """(median ms, peak extra GiB, last result) of fn(), after one warm-up call (compilation)."""
    out = fn()
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else float("nan")
    return sorted(times)[len(times) // 2], peak, out


def fits_materialised(B: int, cuda: bool) -> bool:
    free = torch.cuda.mem_get_info()[0] if cuda else 2**31
    return 6 * 4 * B * B < free  # S and its fp32 temporaries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768, 163840])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--filter", type=float, default=0.8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--plot", help="PNG path; default benchmarks/jest_selection.png (smoke run: a temp file)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (Triton under its interpreter)")
    args = p.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if args.cpu_smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            p.error("--cpu-smoke runs the Triton kernel under its interpreter: set TRITON_INTERPRET=1")
        args.sizes, args.dim, args.reps = [64, 160], 48, 1
        args.plot = args.plot or os.path.join(tempfile.gettempdir(), "jest_selection_smoke.png")
    elif not cuda:
        p.error("this benchmark needs a CUDA GPU; use --cpu-smoke (with TRITON_INTERPRET=1) to check the script")
    device = "cuda" if cuda else "cpu"
    print(f"device: {torch.cuda.get_device_name() if cuda else 'CPU (smoke run)'}; d={args.dim}, bf16, "
          f"{args.chunks} chunks, filter {args.filter}")
    print("| B | way | ms | peak extra GiB | aim | max abs diff vs torch (one chunk) | same picks twice |")
    print("|---|---|---|---|---|---|---|")
    timings: dict[str, list] = {}
    for B in args.sizes:
        k = round(B * (1 - args.filter))
        emb = embeddings(B, args.dim, device, torch.bfloat16)
        chunk = torch.randperm(B, device=device)[: k // args.chunks]
        ways = [("ours (Triton)", "triton"), ("careful PyTorch", "torch")]
        if fits_materialised(B, cuda):
            ways.append(("materialised S", "materialised"))
        picks = {}
        for name, way in ways:
            s = PairScores(**emb, **PARAMS, impl="torch" if way == "materialised" else way)
            ms, gib, picks[way] = measure(lambda s=s: select(s, way, k, args.chunks), cuda, args.reps)
            diff = same = ""
            if way == "triton":
                ours = s.pair_sums(chunk)
                ref = PairScores(**emb, **PARAMS, impl="torch").pair_sums(chunk)
                diff = f"{max(float((a - b).abs().max()) for a, b in zip(ours, ref)):.2e}"
                same = str(torch.equal(picks[way], select(s, way, k, args.chunks)))
            aim = AIMS.get(B, "") if way == "triton" else ""
            print(f"| {B} | {name} | {ms:.1f} | {gib:.2f} | {aim} | {diff} | {same} |", flush=True)
            timings.setdefault(name, []).append((B, ms))
            del s
        del emb
        if cuda:
            torch.cuda.empty_cache()
    plot(timings, args.plot or "benchmarks/jest_selection.png", torch.cuda.get_device_name() if cuda else "CPU smoke")


def plot(timings: dict, path: str, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in timings.items():
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="super-batch B", ylabel="whole selection (ms)",
           title=f"Pairwise JEST selection, 16 chunks ({label})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
