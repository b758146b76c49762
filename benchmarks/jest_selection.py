"""Whole pairwise JEST selection (16 chunks, filter 0.8, d=768, bf16): time and peak extra memory.

Three ways to get the running row/column sums of S: ours (`sigmoid_pair_sums`, Triton), the careful
PyTorch version (the op's reference: only the newly chosen columns of S, [B, b/16] at a time), and
the materialised B×B matrix S (built once per selection, then indexed) where it fits. Every way runs
the same `chunked_selection` loop with the same seed. Time: `curatedloader.bench.measure` (one warm-up
call for compilation, CUDA-synchronised); peak extra memory: `bench.peak_memory` over one more call
(allocated on CUDA, resident set on the CPU). Ours also carries its max abs difference from PyTorch on one
chunk, whether two runs pick the same samples, and the verdict against the aims (H100: B=32,768 in
<= 5 ms; B=163,840 in <= 80 ms with < 1 GiB extra). Rows go to OUT/jest_selection.jsonl (written as each B
ends), the plot of time vs B to OUT/jest_selection.png.

    python benchmarks/jest_selection.py --out benchmarks/results   # needs a CUDA GPU
    python benchmarks/jest_selection.py --cpu-smoke                 # tiny sizes, Triton interpreter: checks the script
"""
from __future__ import annotations

import argparse
import os
import sys

if "--cpu-smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernel's @triton.jit

import torch
import torch.nn.functional as F

from curatedloader import bench
from curatedloader.scoring import PairScores
from curatedloader.selection import chunked_selection, gumbel_topk

NAME = "jest_selection"
AIMS = {32768: (5.0, None), 163840: (80.0, 1024.0)}  # B: (ms, extra MiB); H100 aims from issues 6 and 16
PARAMS = dict(learner_scale=10.0, learner_bias=-10.0, reference_scale=12.0, reference_bias=-9.0)
WAYS = {"triton": "ours (Triton)", "torch": "careful PyTorch", "materialised": "materialised S"}
# the columns RESULTS.md shows of these rows
COLUMNS = ["B", "way", "select_ms", "select_q1_ms", "select_q3_ms", "peak_extra_mib", "max_abs_diff", "same_picks",
           "aim", "aim_met"]


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


def fits_materialised(B: int, cuda: bool) -> bool:
    free = torch.cuda.mem_get_info()[0] if cuda else 2**31
    return 6 * 4 * B * B < free  # S and its fp32 temporaries


def aim(B: int, ms: float, extra_mib: float) -> dict:
    """Ours against the aim set for B, if any."""
    if B not in AIMS:
        return {"aim": None, "aim_met": None}
    aim_ms, aim_mib = AIMS[B]
    text = f"<= {aim_ms:g} ms" + (f", < {aim_mib / 1024:g} GiB extra" if aim_mib else "")
    return {"aim": text, "aim_met": ms <= aim_ms and (aim_mib is None or extra_mib < aim_mib)}


def measure_size(B: int, args, device: torch.device) -> list[dict]:
    """One row per way of selecting k of B (the materialised way only where S fits)."""
    k = round(B * (1 - args.filter))
    emb = embeddings(B, args.dim, device.type, torch.bfloat16)
    chunk = torch.randperm(B, device=device)[: k // args.chunks]
    rows = []
    for way in [w for w in WAYS if w != "materialised" or fits_materialised(B, device.type == "cuda")]:
        s = PairScores(**emb, **PARAMS, impl="torch" if way == "materialised" else way)
        run = lambda: select(s, way, k, args.chunks)  # noqa: E731
        t = bench.measure(run, warmup=1, repeats=args.reps, device=device)
        with bench.peak_memory(device) as mem:
            picks = run()
        row = {"B": B, "k": k, "dim": args.dim, "chunks": args.chunks, "filter": args.filter, "way": WAYS[way],
               **t.row("select"), "peak_extra_mib": mem["device_peak_mib" if device.type == "cuda" else "host_extra_mib"]}
        if way == "triton":
            ref = PairScores(**emb, **PARAMS, impl="torch").pair_sums(chunk)
            row["max_abs_diff"] = max(float((a - b).abs().max()) for a, b in zip(s.pair_sums(chunk), ref))
            row["same_picks"] = torch.equal(picks, run())
            row.update(aim(B, t.median, row["peak_extra_mib"]))
        print(f"B={B} {WAYS[way]}: {t}, peak extra {row['peak_extra_mib']:.3g} MiB", flush=True)
        rows.append(row)
    return rows


def plot(rows: list[dict], path, label: str) -> None:
    with bench.figure(path, figsize=(6, 4)) as (fig, ax):
        for way in dict.fromkeys(r["way"] for r in rows):
            ax.plot(*zip(*[(r["B"], r["select_ms"]) for r in rows if r["way"] == way]), marker="o", label=way)
        ax.set(xscale="log", yscale="log", xlabel="super-batch B", ylabel="whole selection (ms)",
               title=f"Pairwise JEST selection, {rows[0]['chunks']} chunks ({label})")
        ax.legend()
    print(f"plot: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768, 163840])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--filter", type=float, default=0.8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny sizes on the CPU (Triton under its interpreter): B 32 and 64, d=32, 2 chunks, 1 rep")
    bench.output_args(p, NAME)
    args = p.parse_args()
    if args.cpu_smoke:
        args.sizes, args.dim, args.chunks, args.reps = [32, 64], 32, 2, 1
    elif not torch.cuda.is_available():
        p.error("this benchmark needs a CUDA GPU; use --cpu-smoke to check the script")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    print(bench.banner(device))
    print(f"d={args.dim}, bf16, {args.chunks} chunks, filter {args.filter}")
    context = bench.context(NAME + ("/cpu-smoke" if args.cpu_smoke else ""), device)
    path, rows = args.out / f"{NAME}.jsonl", []
    for B in args.sizes:
        size_rows = measure_size(B, args, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # this B's embeddings went with measure_size's frame
        bench.write_rows(path, [{**context, **r} for r in size_rows])  # each B as it ends: a cut-off run keeps them
        rows += size_rows
    print(f"\n{bench.report([{**context, **r} for r in rows], COLUMNS)}\n\nrows: {path}")
    plot(rows, args.out / f"{NAME}.png", context["device"])


if __name__ == "__main__":
    main()
