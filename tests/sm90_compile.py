"""Compile every launch the Triton launchers may pick for an H100 (sm_90) offline, no GPU needed; print one
JSON line per case.

The interpreter runs kernels in numpy and cannot see what only the compiler does (tl.dot shape and dtype
rules, register spills, shared memory), so tests/test_kernels_sm90.py runs this in a fresh process
without TRITON_INTERPRET. The cases come from the launchers' own launch tables (``*_launches(...,
interpret=False)``) at the benchmarks' shapes, for bf16 and fp32 inputs: change a tile there and this
compiles the new one.

    python tests/sm90_compile.py
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from curatedloader.kernels import cross_entropy_kernel as ce
from curatedloader.kernels import diffusion_kernel as diffusion
from curatedloader.kernels import linear_cross_entropy_kernel as lce
from curatedloader.kernels import sigmoid_pair_sums_kernel as sps
from curatedloader.kernels.launch import Launch

TARGET = GPUTarget("cuda", 90, 32)
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
CE_SHAPES = [(8192, 128256), (262144, 1000)]  # (rows, vocabulary): one row per tile, several rows per tile
DIFFUSION_SHAPES = [(4096, 3 * 64 * 64), (65536, 256)]  # (samples, elements per sample)
# fp32 linear cross-entropy follows torch.get_float32_matmul_precision(); the default "highest" is "ieee".
LCE_FP32_PRECISION = "ieee"


def cases() -> Iterator[dict]:
    """Every distinct (kernel, dtype, launch) the launchers may run at the shapes above."""
    for dt in ("bf16", "fp32"):
        for n_rows, n_classes in CE_SHAPES:
            for launch in ce.cross_entropy_launches(n_rows, n_classes, interpret=False):
                yield dict(name=f"cross_entropy {dt}", fn=ce._cross_entropy_rows_kernel, launch=launch,
                           pointers=dict(logits_ptr=f"*{dt}", target_ptr="*i64", loss_ptr="*fp32"),
                           constexprs=dict(stride_lv=1))
        for n, size in DIFFUSION_SHAPES:
            for launch in diffusion.diffusion_launches(n, size, interpret=False):
                yield dict(name=f"diffusion {dt}", fn=diffusion._squared_error_sums_kernel, launch=launch,
                           pointers=dict(target_ptr=f"*{dt}", learner_ptr=f"*{dt}", reference_ptr=f"*{dt}",
                                         out_ptr="*fp32"),
                           constexprs=dict(stride_td=1, stride_ld=1, stride_rd=1))
        for launch in lce.linear_cross_entropy_launches(sixteen_bit=dt == "bf16", interpret=False):
            yield dict(name=f"linear_cross_entropy {dt}", fn=lce._linear_cross_entropy_kernel, launch=launch,
                       pointers=dict(hidden_ptr=f"*{dt}", weight_ptr=f"*{dt}", bias_ptr="*fp32", target_ptr="*i64",
                                     lse_ptr="*fp32", target_logit_ptr="*fp32"),
                       constexprs=dict(HAS_BIAS=True, UPCAST=dt == "fp32", PRECISION=LCE_FP32_PRECISION,
                                       stride_hh=1, stride_wh=1, stride_bias=1))
        for launch in sps.sigmoid_pair_sums_launches(sixteen_bit=dt == "bf16", interpret=False):
            yield dict(name=f"sigmoid_pair_sums {dt}", fn=sps._sigmoid_pair_sums_kernel, launch=launch,
                       pointers=dict(out_ptr="*fp32", chosen_ptr="*i64", al_ptr=f"*{dt}", bl_ptr=f"*{dt}",
                                     ar_ptr=f"*{dt}", br_ptr=f"*{dt}"),
                       constexprs=dict(UPCAST=False, FP32_PRECISION=sps.PRECISION[False],
                                       sal1=1, sbl1=1, sar1=1, sbr1=1),
                       floats=("scale_l", "bias_l", "scale_r", "bias_r"))


def describe(launch: Launch) -> str:
    tiles = "x".join(str(v) for v in launch.tiles.values())
    return f"{tiles} w{launch.num_warps} s{launch.num_stages}"


def compile_case(name, fn, launch: Launch, pointers, constexprs, floats=()) -> dict:
    """Pointers map to their element type; other non-constexpr arguments are i32 (fp32 if in `floats`).
    Pointers and integers are marked divisible by 16, as the JIT specialises them for the large
    aligned shapes of the benchmarks."""
    constexprs = {**constexprs, **launch.tiles}
    types = {a: "constexpr" if a in constexprs else pointers.get(a) or ("fp32" if a in floats else "i32")
             for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if types[a] not in ("constexpr", "fp32")}
    kernel = triton.compile(ASTSource(fn, types, constexprs=constexprs, attrs=attrs), target=TARGET,
                            options=dict(num_warps=launch.num_warps, num_stages=launch.num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return {
        "case": f"{name} {describe(launch)}", "registers": int(re.search(r"REG:(\d+)", usage).group(1)),
        "stack": int(re.search(r"STACK:(\d+)", usage).group(1)), "shared": kernel.metadata.shared,
        "wgmma": "wgmma" in kernel.asm["ptx"],
    }


def main() -> None:
    for case in cases():
        print(json.dumps(compile_case(**case)), flush=True)


if __name__ == "__main__":
    main()
