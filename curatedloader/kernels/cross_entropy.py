"""Per-sample cross-entropy: one pass over the logits with an online log-sum-exp."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import use_triton
from .reference import cross_entropy_reference, sequence_mean
from .validation import check_float, check_same_device, check_target

MAX_TILE = 8192  # elements a program holds per step: 16-32 per thread at 8 warps, many loads in flight


@triton.jit
def _cross_entropy_rows_kernel(
    logits_ptr, target_ptr, loss_ptr,
    n_rows, seq_len, n_classes,
    stride_lb, stride_lt, stride_lv, stride_tb, stride_tt,
    ignore_index,
    BLOCK_ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    # Rows past the end recompute the last row, so no load needs a row mask; they are not stored.
    row = tl.minimum(rows, n_rows - 1).to(tl.int64)
    row_ptr = logits_ptr + (row // seq_len) * stride_lb + (row % seq_len) * stride_lt
    target = tl.load(target_ptr + (row // seq_len) * stride_tb + (row % seq_len) * stride_tt).to(tl.int64)
    valid = target != ignore_index
    target_logit = tl.load(row_ptr + target * stride_lv, mask=valid, other=0.0).to(tl.float32)

    m = tl.full([BLOCK_ROWS], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_ROWS], tl.float32)
    for start in range(0, n_classes, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(
            row_ptr[:, None] + cols.to(tl.int64)[None, :] * stride_lv,
            mask=(cols < n_classes)[None, :], other=float("-inf"),
        ).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        # A tile of only -inf logits (masked tokens) would give -inf - -inf = NaN: subtract 0 instead.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_sub) + tl.sum(tl.exp(x - m_sub[:, None]), axis=1)
        m = m_new
    loss = tl.where(valid, m + tl.log(s) - target_logit, 0.0)
    tl.store(loss_ptr + rows, loss, mask=rows < n_rows)


def cross_entropy_rows(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Launch the kernel: fp32 loss per row, shaped like ``target`` (0 where ignored). Any strides."""
    logits3 = logits if logits.dim() == 3 else logits.unsqueeze(1)
    target2 = target if target.dim() == 2 else target.unsqueeze(1)
    n_seq, seq_len, n_classes = logits3.shape
    n_rows = n_seq * seq_len
    loss = torch.zeros(target.shape, dtype=torch.float32, device=logits.device)
    if n_rows == 0:
        return loss
    block_v = min(MAX_TILE, triton.next_power_of_2(n_classes))
    # Small vocabularies: several rows per program, so each program still moves a full tile.
    block_rows = min(MAX_TILE // block_v, triton.next_power_of_2(n_rows))
    _cross_entropy_rows_kernel[(triton.cdiv(n_rows, block_rows),)](
        logits3, target2, loss,
        n_rows, seq_len, n_classes,
        *logits3.stride(), *target2.stride(),
        ignore_index,
        BLOCK_ROWS=block_rows, BLOCK_V=block_v,
        num_warps=8 if block_rows * block_v >= 4096 else 4,
    )
    return loss


def per_sample_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -100, impl: str = "auto"
) -> torch.Tensor:
    """Cross-entropy per sample, in fp32; the inputs are never modified.

    ``logits [N, V]`` with ``target [N]`` gives ``[N]``. ``logits [B, T, V]`` with ``target [B, T]`` gives
    ``[B]``: each sequence's mean over its tokens whose target is not ``ignore_index``; a sequence with no
    such token gets 0. Inputs may be float32, bfloat16 or float16, with any strides.
    ``impl="auto"`` runs the Triton kernel on CUDA tensors and the PyTorch reference otherwise.

    >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> per_sample_cross_entropy(logits, torch.tensor([0, 2]))
    tensor([0.2395, 1.0986])
    """
    check_float("logits", logits)
    if logits.dim() not in (2, 3) or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape [N, V] or [B, T, V] with V >= 1, got {tuple(logits.shape)}")
    check_same_device(logits=logits, target=target)
    check_target(target, logits.shape[:-1], logits.shape[-1], ignore_index)
    if not use_triton(impl, logits.device):
        return cross_entropy_reference(logits, target, ignore_index)
    return sequence_mean(cross_entropy_rows(logits, target, ignore_index), target, ignore_index)
