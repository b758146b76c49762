"""Compile every Triton kernel for an H100 (sm_90) offline, no GPU needed; print one JSON line per case.

The interpreter runs kernels in numpy and cannot see what only the compiler does (tl.dot shape and dtype
rules, register spills, shared memory), so tests/test_kernels_sm90.py runs this in a fresh process
without TRITON_INTERPRET. Cases follow the configurations the launchers use for bf16 and fp32 inputs.

    python tests/sm90_compile.py
"""
import importlib
import json
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# the package exports functions named like two of these modules, so import the modules by name
cross_entropy, diffusion, linear_cross_entropy, sigmoid_pair_sums = (
    importlib.import_module(f"curatedloader.kernels.{m}")
    for m in ("cross_entropy", "diffusion", "linear_cross_entropy", "sigmoid_pair_sums")
)

TARGET = GPUTarget("cuda", 90, 32)
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_case(name, fn, pointers, constexprs, floats=(), num_warps=4, num_stages=3):
    """Pointers map to their element type; other non-constexpr arguments are i32 (fp32 if in `floats`).
    Pointers and integers are marked divisible by 16, as the JIT specialises them for the large
    aligned shapes of the benchmarks."""
    types = {a: "constexpr" if a in constexprs else pointers.get(a) or ("fp32" if a in floats else "i32")
             for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if types[a] not in ("constexpr", "fp32")}
    kernel = triton.compile(ASTSource(fn, types, constexprs=constexprs, attrs=attrs), target=TARGET,
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    print(json.dumps({
        "case": name, "registers": int(re.search(r"REG:(\d+)", usage).group(1)),
        "stack": int(re.search(r"STACK:(\d+)", usage).group(1)), "shared": kernel.metadata.shared,
        "wgmma": "wgmma" in kernel.asm["ptx"],
    }), flush=True)


def main() -> None:
    for dt in ("bf16", "fp32"):
        ptrs = dict(logits_ptr=f"*{dt}", target_ptr="*i64", loss_ptr="*fp32")
        for rows, cols in ((1, cross_entropy.MAX_TILE), (8, 1024)):
            compile_case(f"cross_entropy {dt} {rows}x{cols}", cross_entropy._cross_entropy_rows_kernel, ptrs,
                         dict(BLOCK_ROWS=rows, BLOCK_V=cols, stride_lv=1), num_warps=8)

        ptrs = dict(target_ptr=f"*{dt}", learner_ptr=f"*{dt}", reference_ptr=f"*{dt}", out_ptr="*fp32")
        for rows, cols in ((1, 4096), (16, 256)):
            compile_case(f"diffusion {dt} {rows}x{cols}", diffusion._squared_error_sums_kernel, ptrs,
                         dict(BLOCK_B=rows, BLOCK_D=cols, stride_td=1, stride_ld=1, stride_rd=1), num_warps=8)

        lce = linear_cross_entropy
        ptrs = dict(hidden_ptr=f"*{dt}", weight_ptr=f"*{dt}", bias_ptr="*fp32", target_ptr="*i64",
                    lse_ptr="*fp32", target_logit_ptr="*fp32")
        compile_case(f"linear_cross_entropy {dt}", lce._linear_cross_entropy_kernel, ptrs, dict(
            HAS_BIAS=True, UPCAST=dt == "fp32", PRECISION="ieee", BLOCK_N=lce.BLOCK_N, BLOCK_V=lce.BLOCK_V,
            BLOCK_H=lce.BLOCK_H_FP32 if dt == "fp32" else lce.BLOCK_H, stride_hh=1, stride_wh=1, stride_bias=1,
        ), num_warps=lce.NUM_WARPS, num_stages=lce.NUM_STAGES)

        sps = sigmoid_pair_sums
        ptrs = dict(out_ptr="*fp32", chosen_ptr="*i64", al_ptr=f"*{dt}", bl_ptr=f"*{dt}", ar_ptr=f"*{dt}",
                    br_ptr=f"*{dt}")
        compile_case(f"sigmoid_pair_sums {dt}", sps._sigmoid_pair_sums_kernel, ptrs, dict(
            BLOCK_M=128, BLOCK_N=64, BLOCK_K=32 if dt == "fp32" else 64, UPCAST=False, FP32_PRECISION="tf32x3",
            sal1=1, sbl1=1, sar1=1, sbr1=1,
        ), floats=("scale_l", "bias_l", "scale_r", "bias_r"), num_warps=8)


if __name__ == "__main__":
    main()
