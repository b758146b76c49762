"""Linear + cross-entropy per row without the N x V logits: tiles of hidden @ weight.T feed an online
log-sum-exp. Kernel, launcher and launch table."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import Launch, interpreting, next_power_of_2, num_splits, run_fastest
from .triton_helpers import online_logsumexp, tiled_dot

# H100: a 128 x 128 fp32 accumulator is 64 registers per thread at 8 warps, and three 32 KiB stages of bf16
# operand tiles fit in shared memory twice per SM. fp32 operands (and mixed dtypes, upcast) take half the H
# depth: at 64, three stages need 192 KiB (tf32) and the exact-fp32 (FMA) dot spills registers (sm_90
# compile, ptxas). Smaller row blocks suit few rows. The interpreter runs one launch whatever the dtype.
LINEAR_CROSS_ENTROPY_LAUNCHES = {
    "interpreter": (Launch(dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=64), num_warps=8),),
    "16-bit": (
        Launch(dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=64), num_warps=8, num_stages=3),
        Launch(dict(BLOCK_N=64, BLOCK_V=128, BLOCK_H=64), num_warps=4, num_stages=4),
        Launch(dict(BLOCK_N=128, BLOCK_V=64, BLOCK_H=64), num_warps=4, num_stages=4),
    ),
    "fp32": (
        Launch(dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=32), num_warps=8, num_stages=3),
        Launch(dict(BLOCK_N=64, BLOCK_V=128, BLOCK_H=32), num_warps=8, num_stages=3),
    ),
}


def linear_cross_entropy_launches(sixteen_bit: bool, interpret: bool) -> tuple[Launch, ...]:
    """The launches ``linear_cross_entropy_rows`` picks from: 16-bit operands of one dtype, or fp32 (one
    under the interpreter)."""
    return LINEAR_CROSS_ENTROPY_LAUNCHES["interpreter" if interpret else "16-bit" if sixteen_bit else "fp32"]


@triton.jit
def _linear_cross_entropy_kernel(
    hidden_ptr, weight_ptr, bias_ptr, target_ptr, lse_ptr, target_logit_ptr,
    n_rows, seq_len, n_classes, hidden_size, tiles_per_split,
    stride_hb, stride_ht, stride_hh, stride_wv, stride_wh, stride_bias, stride_tb, stride_tt,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """Per row and vocabulary split: the log-sum-exp of the split's logits and the target's logit if it
    falls in the split (else 0); logits = hidden @ weight.T + bias, computed tile by tile, never stored.

    hidden_ptr:       [n_seq, seq_len, hidden_size] fp32/bf16/fp16, strides (stride_hb, stride_ht, stride_hh).
    weight_ptr:       [n_classes, hidden_size], strides (stride_wv, stride_wh).
    bias_ptr:         [n_classes], stride stride_bias; read only if HAS_BIAS.
    target_ptr:       [n_seq, seq_len] integer class indices, strides (stride_tb, stride_tt).
    lse_ptr, target_logit_ptr: [n_splits, n_rows] fp32 outputs, contiguous; the grid's second axis is the
                      split, each covering tiles_per_split vocabulary tiles.
    UPCAST:           fp32 operands for tl.dot (the interpreter; mixed or fp32 inputs).
    PRECISION:        input_precision of fp32 dots: "ieee" (exact) or "tf32".
    BLOCK_N:          rows per program; BLOCK_V: classes per tile; BLOCK_H: hidden depth per dot step.
    """
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(1)
    row_ok = rows < n_rows
    # Rows past the end recompute the last row, so hidden loads need no row mask; they are not stored.
    row = tl.minimum(rows, n_rows - 1).to(tl.int64)
    every_row = tl.full([BLOCK_N], True, tl.int1)
    h_rows = hidden_ptr + (row // seq_len) * stride_hb + (row % seq_len) * stride_ht
    target = tl.load(target_ptr + (row // seq_len) * stride_tb + (row % seq_len) * stride_tt)

    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    target_logit = tl.zeros([BLOCK_N], tl.float32)
    v_start = split * tiles_per_split * BLOCK_V
    v_end = tl.minimum(v_start + tiles_per_split * BLOCK_V, n_classes)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < n_classes
        logits = tiled_dot(tl.zeros([BLOCK_N, BLOCK_V], tl.float32), h_rows, every_row, stride_hh,
                           weight_ptr + cols.to(tl.int64) * stride_wv, col_ok, stride_wh, hidden_size,
                           BLOCK_H, UPCAST, PRECISION)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + cols.to(tl.int64) * stride_bias, mask=col_ok, other=0.0)
            logits += bias.to(tl.float32)[None, :]
        logits = tl.where(col_ok[None, :], logits, float("-inf"))
        m, s = online_logsumexp(m, s, logits)
        target_logit += tl.sum(tl.where(cols[None, :] == target[:, None], logits, 0.0), axis=1)
    out = split * n_rows + rows
    tl.store(lse_ptr + out, m + tl.log(s), mask=row_ok)
    tl.store(target_logit_ptr + out, target_logit, mask=row_ok)


def linear_cross_entropy_rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    ignore_index: int,
    splits: int | None = None,
) -> torch.Tensor:
    """Launch the kernel: fp32 loss per row, shaped like ``target`` (0 where ignored). Any strides.

    ``splits`` cuts the vocabulary into that many ranges (default: enough programs to fill the GPU); their
    partial log-sum-exps are combined afterwards in a fixed order, so the result is deterministic.
    """
    hidden3 = hidden if hidden.dim() == 3 else hidden.unsqueeze(1)
    target2 = target if target.dim() == 2 else target.unsqueeze(1)
    n_seq, seq_len, hidden_size = hidden3.shape
    n_rows, n_classes = n_seq * seq_len, weight.shape[0]
    if n_rows == 0:
        return torch.zeros(target.shape, dtype=torch.float32, device=hidden.device)
    sixteen_bit = hidden.dtype == weight.dtype and hidden.dtype in (torch.float16, torch.bfloat16)
    # fp32 inputs follow PyTorch's matmul setting: exact fp32 by default, TF32 if the user allowed it.
    precision = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    interpret = interpreting()

    def run(launch: Launch) -> torch.Tensor:
        block_n, block_v = launch.tiles["BLOCK_N"], launch.tiles["BLOCK_V"]
        row_programs = triton.cdiv(n_rows, block_n)
        n_splits, tiles_per_split = num_splits(hidden.device, row_programs, triton.cdiv(n_classes, block_v), splits)
        lse = torch.empty(n_splits, n_rows, dtype=torch.float32, device=hidden.device)
        target_logit = torch.empty_like(lse)
        _linear_cross_entropy_kernel[(row_programs, n_splits)](
            hidden_ptr=hidden3, weight_ptr=weight, bias_ptr=bias if bias is not None else weight,
            target_ptr=target2, lse_ptr=lse, target_logit_ptr=target_logit,
            n_rows=n_rows, seq_len=seq_len, n_classes=n_classes, hidden_size=hidden_size,
            tiles_per_split=tiles_per_split,
            stride_hb=hidden3.stride(0), stride_ht=hidden3.stride(1), stride_hh=hidden3.stride(2),
            stride_wv=weight.stride(0), stride_wh=weight.stride(1),
            stride_bias=bias.stride(0) if bias is not None else 0,
            stride_tb=target2.stride(0), stride_tt=target2.stride(1),
            HAS_BIAS=bias is not None, UPCAST=interpret or not sixteen_bit, PRECISION=precision,
            **launch.tiles, num_warps=launch.num_warps, num_stages=launch.num_stages,
        )
        return torch.logsumexp(lse, 0) - target_logit.sum(0)

    launches = linear_cross_entropy_launches(sixteen_bit, interpret)
    bucket = (hidden.dtype, weight.dtype, precision, min(next_power_of_2(n_rows), 1024))
    loss = run_fastest("linear_cross_entropy", bucket, launches, run)
    return torch.where(target2.reshape(-1) != ignore_index, loss, 0.0).view(target.shape)
