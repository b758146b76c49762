"""Kernel benchmark: curatedloader.kernels vs eager PyTorch, torch.compile, Liger-Kernel, QuACK, Cut Cross-Entropy.

    python benchmarks/kernels.py --out benchmarks/results   # CUDA GPU: DESIGN's shapes
    python benchmarks/kernels.py --cpu-smoke                # no GPU: tiny shapes, Triton interpreter, checks the script

Per contender: milliseconds (on CUDA `triton.testing.do_bench`, which flushes L2 before each call and times
with CUDA events; on the CPU `curatedloader.bench.measure`), median and spread; GB/s of compulsory traffic
(inputs read once + fp32 outputs) and its share of the copy bandwidth measured in the same run (a 1 GiB
device-to-device copy); TFLOP/s (2·N·H·V) for the linear op; peak extra memory (`bench.peak_memory`: allocated
beyond the inputs on CUDA, resident set on the CPU). Per case, ours carries max |ours - fp32 PyTorch reference|
and the verdict against the aims: per-row cross-entropy at >= 90% of the copy bandwidth, linear cross-entropy
at or above the best peer's TFLOP/s with < 0.1 GiB extra.
Optional peers, each skipped with a message when not installed: Liger-Kernel (`pip install liger-kernel`),
QuACK (`pip install quack-kernels`, per-row cross-entropy), Cut Cross-Entropy (`pip install cut-cross-entropy`,
linear cross-entropy) and PyTorch's own `F.linear_cross_entropy` where this torch has it.
Rows go to OUT/kernels.jsonl (one per contender and case, written as each case ends), the plot to OUT/kernels.png.
"""
from __future__ import annotations

import argparse
import os
import sys

if "--cpu-smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernels' @triton.jit

import torch
import torch.nn.functional as F

from curatedloader import bench
from curatedloader.kernels import diffusion_learnability, linear_cross_entropy, per_sample_cross_entropy

try:
    from liger_kernel.transformers.functional import liger_cross_entropy, liger_fused_linear_cross_entropy
except ImportError:
    liger_cross_entropy = liger_fused_linear_cross_entropy = None
try:
    from quack.cross_entropy import cross_entropy_fwd as quack_cross_entropy
except ImportError:
    quack_cross_entropy = None
try:
    from cut_cross_entropy import linear_cross_entropy as cce_linear_cross_entropy
except ImportError:
    cce_linear_cross_entropy = None
MISSING = [name for name, fn in (("liger-kernel", liger_cross_entropy), ("quack-kernels", quack_cross_entropy),
                                 ("cut-cross-entropy", cce_linear_cross_entropy)) if fn is None]
NAME = "kernels"
CE_AIM_COPY_SHARE, LCE_AIM_EXTRA_MIB = 0.90, 0.1 * 1024
# the columns RESULTS.md shows of these rows
COLUMNS = ["case", "impl", "fwd_ms", "fwd_q1_ms", "fwd_q3_ms", "gb_s", "copy_share", "tflop_s", "peak_extra_mib",
           "max_abs_err", "aim", "aim_met"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GPU_CASES = [
    ("cross_entropy", (8192, 128256), "bf16"),
    ("cross_entropy", (65536, 32000), "bf16"),
    ("cross_entropy", (262144, 1000), "fp32"),
    ("linear_cross_entropy", (8192, 4096, 128256), "bf16"),
    ("linear_cross_entropy", (16384, 2048, 32000), "bf16"),
    ("linear_cross_entropy", (16384, 4096, 131072), "bf16"),  # Liger's published SM90 shape
    ("diffusion", (4096, 3, 64, 64), "bf16"),
    ("diffusion", (65536, 2), "fp32"),
]
SMOKE_CASES = [
    ("cross_entropy", (64, 1000), "bf16"),
    ("linear_cross_entropy", (64, 96, 1000), "bf16"),
    ("diffusion", (8, 3, 16, 16), "bf16"),
]


def time_ms(fn, device: torch.device) -> bench.Timing:
    """On CUDA, do_bench's per-call times (L2 flushed before each, CUDA events: the harness flushes nothing
    and its host clock would add launch latency to sub-millisecond kernels); on the CPU, the harness."""
    if device.type == "cuda":
        import triton.testing

        return bench.Timing(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="all"))
    return bench.measure(fn, warmup=1, repeats=1, device=device)


def peak_extra_mib(fn, device: torch.device) -> float:
    """Peak memory of one call beyond what it starts with: allocated on CUDA, resident set on the CPU."""
    with bench.peak_memory(device) as mem:
        fn()
    return mem["device_peak_mib" if device.type == "cuda" else "host_extra_mib"]


def copy_bandwidth_gbs(device: torch.device) -> float:
    src = torch.empty(2**28 if device.type == "cuda" else 2**22, device=device)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / time_ms(lambda: dst.copy_(src), device).median / 1e6


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.nbytes for t in tensors)


def build(op: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, impl: str, compile_peers: bool):
    """Inputs and the contenders for one case: (runs by name, compulsory bytes, flops, ours, fp32 reference)."""
    g = torch.Generator(device).manual_seed(0)
    runs: dict = {}
    if op == "cross_entropy":
        n, v = shape
        logits = torch.randn(n, v, device=device, generator=g).to(dtype)
        target = torch.randint(0, v, (n,), device=device, generator=g)
        ours = lambda: per_sample_cross_entropy(logits, target, impl=impl)
        reference = lambda: per_sample_cross_entropy(logits, target, impl="torch")
        eager = lambda: F.cross_entropy(logits, target, reduction="none")
        if liger_cross_entropy is not None:
            scratch = logits.clone()  # Liger writes gradients into its input
            runs["liger"] = lambda: liger_cross_entropy(scratch, target, reduction="none")
        if quack_cross_entropy is not None and device.type == "cuda":
            runs["quack"] = lambda: quack_cross_entropy(logits, target)
        moved, flops = nbytes(logits, target) + 4 * n, 0
    elif op == "linear_cross_entropy":
        n, h, v = shape
        hidden = torch.randn(n, h, device=device, generator=g).to(dtype)
        weight = (torch.randn(v, h, device=device, generator=g) / h**0.5).to(dtype)
        target = torch.randint(0, v, (n,), device=device, generator=g)
        ours = lambda: linear_cross_entropy(hidden, weight, target, impl=impl)
        reference = lambda: linear_cross_entropy(hidden, weight, target, impl="torch")
        eager = lambda: F.cross_entropy(hidden @ weight.T, target, reduction="none")
        if liger_fused_linear_cross_entropy is not None:
            runs["liger"] = lambda: liger_fused_linear_cross_entropy(hidden, weight, target, reduction="none")
        if cce_linear_cross_entropy is not None and device.type == "cuda":
            runs["cut cross-entropy"] = lambda: cce_linear_cross_entropy(hidden, weight, target, reduction="none")
        if hasattr(F, "linear_cross_entropy"):
            runs["F.linear_cross_entropy"] = lambda: F.linear_cross_entropy(hidden, weight, target, reduction="none")
        moved, flops = nbytes(hidden, weight, target) + 4 * n, 2 * n * h * v
    else:
        target, learner, reference_pred = (torch.randn(shape, device=device, generator=g).to(dtype) for _ in range(3))
        weight = torch.rand(shape[0], device=device, generator=g) + 0.5
        ours = lambda: diffusion_learnability(target, learner, reference_pred, weight, impl=impl)
        reference = lambda: diffusion_learnability(target, learner, reference_pred, weight, impl="torch")

        def eager():
            per = [weight * (p - target).square().flatten(1).mean(1) for p in (learner, reference_pred)]
            return per[0] - per[1], per[0], per[1]

        moved, flops = nbytes(target, learner, reference_pred, weight) + 12 * shape[0], 0
    runs = {"ours": ours, "eager": eager, **({"torch.compile": torch.compile(eager)} if compile_peers else {}), **runs}
    return runs, moved, flops, ours, reference


def aim(op: str, rows: dict[str, dict], flops: int) -> dict:
    """Ours against the aims: per-row cross-entropy at >= 90% of copy bandwidth; linear cross-entropy at or
    above the best peer's TFLOP/s (eager and torch.compile included) with < 0.1 GiB extra; none for diffusion."""
    ours = rows["ours"]
    if op == "cross_entropy":
        return {"aim": f">= {CE_AIM_COPY_SHARE:.0%} of copy bandwidth", "aim_met": ours["copy_share"] >= CE_AIM_COPY_SHARE}
    if op != "linear_cross_entropy":
        return {"aim": None, "aim_met": None}
    best = min((r for name, r in rows.items() if name != "ours"), key=lambda r: r["fwd_ms"])
    return {"aim": f">= best peer ({best['impl']}, {best['tflop_s']:.3g} TFLOP/s), < {LCE_AIM_EXTRA_MIB / 1024:.1f} GiB extra",
            "aim_met": ours["fwd_ms"] <= best["fwd_ms"] and ours["peak_extra_mib"] < LCE_AIM_EXTRA_MIB}


def max_error(ours, reference) -> float:
    first = lambda x: x[0] if isinstance(x, tuple) else x  # noqa: E731
    return (first(ours()) - first(reference())).abs().max().item()


def measure_case(op: str, shape: tuple[int, ...], dtype_name: str, device: torch.device, copy_gbs: float,
                 compile_peers: bool) -> list[dict]:
    """One row per contender of one case (a row with `error` for a peer that fails on it); ours first."""
    with torch.inference_mode():
        runs, moved, flops, ours, reference = build(op, shape, DTYPES[dtype_name], device, "triton", compile_peers)
        case = f"{op} {'x'.join(map(str, shape))} {dtype_name}"
        rows: dict[str, dict] = {}
        failed = []
        for name, fn in runs.items():
            row = {"case": case, "op": op, "shape": list(shape), "dtype": dtype_name, "impl": name, "copy_gb_s": copy_gbs}
            try:
                t = time_ms(fn, device)
            except Exception as e:  # an optional peer that does not take this shape or dtype
                failed.append({**row, "error": f"{type(e).__name__}: {e}"})
                print(f"{case} {name}: failed: {failed[-1]['error']}")
                continue
            gbs = moved / t.median / 1e6
            rows[name] = {**row, **t.row("fwd"), "gb_s": gbs, "copy_share": gbs / copy_gbs,
                          "tflop_s": flops / t.median / 1e9 if flops else None,
                          "peak_extra_mib": peak_extra_mib(fn, device)}
            print(f"{case} {name}: {t}, {gbs:.3g} GB/s ({gbs / copy_gbs:.0%} of copy)")
        rows["ours"].update(max_abs_err=max_error(ours, reference), **aim(op, rows, flops))
        print(f"{case}: max |ours - fp32 PyTorch reference| = {rows['ours']['max_abs_err']:.2e}; "
              f"aim: {rows['ours']['aim'] or 'none set'}, met: {rows['ours']['aim_met']}")
        del runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [*rows.values(), *failed]


def plot(rows: list[dict], path, title: str) -> None:
    rows = [r for r in rows if "fwd_ms" in r]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    width = 0.8 / len(impls)
    with bench.figure(path, figsize=(2 + 1.6 * len(cases), 4.5)) as (fig, ax):
        for k, impl in enumerate(impls):
            xs, ys = zip(*[(cases.index(r["case"]) + k * width, r["fwd_ms"]) for r in rows if r["impl"] == impl])
            ax.bar(xs, ys, width, label=impl)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, rotation=20, ha="right", fontsize=7)
        ax.set(yscale="log", ylabel="ms (lower is better)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU under the Triton interpreter")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    bench.output_args(parser, NAME)
    args = parser.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("benchmarks/kernels.py needs a CUDA GPU; run `python benchmarks/kernels.py --cpu-smoke` for a tiny CPU check")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    print(bench.banner(device))
    for name in MISSING:
        print(f"{name} not installed: that peer is skipped (pip install {name})")
    copy = copy_bandwidth_gbs(device)
    print(f"copy bandwidth: {copy:.3g} GB/s")
    context = bench.context(NAME + ("/cpu-smoke" if args.cpu_smoke else ""), device)
    path, rows = args.out / f"{NAME}.jsonl", []
    for op, shape, dtype_name in SMOKE_CASES if args.cpu_smoke else GPU_CASES:
        case_rows = measure_case(op, shape, dtype_name, device, copy, not (args.no_compile or args.cpu_smoke))
        bench.write_rows(path, [{**context, **r} for r in case_rows])  # each case as it ends: a cut-off run keeps them
        rows += case_rows
    print(f"\n{bench.report([{**context, **r} for r in rows], COLUMNS)}\n\nrows: {path}")
    plot(rows, args.out / f"{NAME}.png", f"{context['device']}, copy {copy:.0f} GB/s, {context['date']}")


if __name__ == "__main__":
    main()
