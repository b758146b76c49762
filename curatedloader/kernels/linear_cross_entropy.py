"""Linear + cross-entropy per sample without the N x V logits: tiles of hidden @ weight.T feed an online log-sum-exp."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import interpreting, num_splits, use_triton
from .reference import linear_cross_entropy_reference, sequence_mean
from .validation import check_float, check_same_device, check_target

# H100: a 128 x 128 fp32 accumulator is 64 registers per thread at 8 warps, and three 32 KiB stages of
# bf16 operand tiles fit in shared memory twice per SM. fp32 operands take half the H depth: at 64, three
# stages need 192 KiB (tf32) and the exact-fp32 (FMA) dot spills registers (sm_90 compile, ptxas).
BLOCK_N, BLOCK_V, BLOCK_H, BLOCK_H_FP32 = 128, 128, 64, 32
NUM_WARPS, NUM_STAGES = 8, 3


@triton.jit
def _linear_cross_entropy_kernel(
    hidden_ptr, weight_ptr, bias_ptr, target_ptr, lse_ptr, target_logit_ptr,
    n_rows, seq_len, n_classes, hidden_size, tiles_per_split,
    stride_hb, stride_ht, stride_hh, stride_wv, stride_wh, stride_bias, stride_tb, stride_tt,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(1)
    # Rows past the end recompute the last row, so hidden loads need no row mask; they are not stored.
    row = tl.minimum(rows, n_rows - 1).to(tl.int64)
    h_row_ptr = hidden_ptr + (row // seq_len) * stride_hb + (row % seq_len) * stride_ht
    target = tl.load(target_ptr + (row // seq_len) * stride_tb + (row % seq_len) * stride_tt)

    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    target_logit = tl.zeros([BLOCK_N], tl.float32)
    v_start = split * tiles_per_split * BLOCK_V
    v_end = tl.minimum(v_start + tiles_per_split * BLOCK_V, n_classes)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < n_classes
        w_col_ptr = weight_ptr + cols.to(tl.int64) * stride_wv
        logits = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for h0 in range(0, hidden_size, BLOCK_H):
            hs = h0 + tl.arange(0, BLOCK_H)
            h_ok = hs < hidden_size
            hs = hs.to(tl.int64)  # a transposed operand's stride times H can pass 2^31
            a = tl.load(h_row_ptr[:, None] + hs[None, :] * stride_hh, mask=h_ok[None, :], other=0.0)
            w = tl.load(w_col_ptr[None, :] + hs[:, None] * stride_wh, mask=h_ok[:, None] & col_ok[None, :], other=0.0)
            if UPCAST:  # the interpreter's bf16 dot is wrong, and mixed dtypes need one operand type
                a = a.to(tl.float32)
                w = w.to(tl.float32)
            logits = tl.dot(a, w, logits, input_precision=PRECISION)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + cols.to(tl.int64) * stride_bias, mask=col_ok, other=0.0)
            logits += bias.to(tl.float32)[None, :]
        logits = tl.where(col_ok[None, :], logits, float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        # A tile of only -inf logits (a bias masking tokens) would give -inf - -inf = NaN: subtract 0 instead.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_sub) + tl.sum(tl.exp(logits - m_sub[:, None]), axis=1)
        m = m_new
        target_logit += tl.sum(tl.where(cols[None, :] == target[:, None], logits, 0.0), axis=1)
    out = split * n_rows + rows
    tl.store(lse_ptr + out, m + tl.log(s), mask=rows < n_rows)
    tl.store(target_logit_ptr + out, target_logit, mask=rows < n_rows)


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
    row_programs = triton.cdiv(n_rows, BLOCK_N)
    splits, tiles_per_split = num_splits(hidden.device, row_programs, triton.cdiv(n_classes, BLOCK_V), splits)
    lse = torch.empty(splits, n_rows, dtype=torch.float32, device=hidden.device)
    target_logit = torch.empty_like(lse)
    sixteen_bit = hidden.dtype == weight.dtype and hidden.dtype in (torch.float16, torch.bfloat16)
    # fp32 inputs follow PyTorch's matmul setting: exact fp32 by default, TF32 if the user allowed it.
    precision = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    _linear_cross_entropy_kernel[(row_programs, splits)](
        hidden3, weight, bias if bias is not None else weight, target2, lse, target_logit,
        n_rows, seq_len, n_classes, hidden_size, tiles_per_split,
        *hidden3.stride(), *weight.stride(), bias.stride(0) if bias is not None else 0, *target2.stride(),
        HAS_BIAS=bias is not None, UPCAST=interpreting() or not sixteen_bit, PRECISION=precision,
        BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V, BLOCK_H=BLOCK_H if sixteen_bit else BLOCK_H_FP32,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    loss = torch.logsumexp(lse, 0) - target_logit.sum(0)
    return torch.where(target2.reshape(-1) != ignore_index, loss, 0.0).view(target.shape)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    impl: str = "auto",
) -> torch.Tensor:
    """``per_sample_cross_entropy(hidden @ weight.T + bias, target)`` without allocating the N x V logits.

    ``hidden [N, H]`` with ``target [N]`` gives ``[N]``; ``hidden [B, T, H]`` with ``target [B, T]`` gives
    ``[B]``, each sequence's mean over non-ignored tokens (0 if it has none). ``weight [V, H]``,
    ``bias [V]``. fp32 results, fp32 accumulation; inputs float32, bfloat16 or float16, any strides.
    ``impl="auto"`` runs the Triton kernel on CUDA tensors and the PyTorch reference otherwise.

    >>> hidden, weight = torch.ones(2, 4), torch.zeros(3, 4)
    >>> linear_cross_entropy(hidden, weight, torch.tensor([0, 2]), bias=torch.tensor([2.0, 0.0, 0.0]))
    tensor([0.2395, 2.2395])
    """
    check_float("hidden", hidden)
    check_float("weight", weight)
    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must have shape [N, H] or [B, T, H], got {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] == 0:
        raise ValueError(f"weight must have shape [V, {hidden.shape[-1]}] with V >= 1, got {tuple(weight.shape)}")
    if bias is not None:
        check_float("bias", bias)
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
    check_same_device(hidden=hidden, weight=weight, target=target, bias=bias)
    check_target(target, hidden.shape[:-1], weight.shape[0], ignore_index)
    if not use_triton(impl, hidden.device):
        return linear_cross_entropy_reference(hidden, weight, target, bias, ignore_index)
    return sequence_mean(linear_cross_entropy_rows(hidden, weight, target, bias, ignore_index), target, ignore_index)
