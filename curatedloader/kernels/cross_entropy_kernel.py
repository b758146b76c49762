"""Per-row cross-entropy kernel: one pass over the logits with an online log-sum-exp; launcher and launch table."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import Launch, RowTile, interpreting, next_power_of_2, row_launches, run_fastest
from .triton_helpers import online_logsumexp


# H100: 16-32 fp32 values per thread keep many loads in flight without spilling (sm_90 compile, ptxas).
# The interpreter's 8192 is what the tests' shapes are built around (V = 8209 spans two tiles).
CROSS_ENTROPY_TILES = {
    "interpreter": (RowTile(8192, 8),),
    "gpu": (RowTile(8192, 8), RowTile(4096, 8), RowTile(16384, 16)),
}


def cross_entropy_launches(n_rows: int, n_classes: int, interpret: bool) -> list[Launch]:
    """The launches ``cross_entropy_rows`` picks from for this shape (one under the interpreter)."""
    tiles = CROSS_ENTROPY_TILES["interpreter" if interpret else "gpu"]
    return row_launches(tiles, n_rows, n_classes, ("BLOCK_ROWS", "BLOCK_V"))


@triton.jit
def _cross_entropy_rows_kernel(
    logits_ptr, target_ptr, loss_ptr,
    n_rows, seq_len, n_classes,
    stride_lb, stride_lt, stride_lv, stride_tb, stride_tt,
    ignore_index,
    BLOCK_ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """loss[row] = logsumexp(logits[row]) - logits[row, target[row]], 0 where target is ignore_index.

    logits_ptr:  [n_seq, seq_len, n_classes] logits, fp32/bf16/fp16, strides (stride_lb, stride_lt, stride_lv).
    target_ptr:  [n_seq, seq_len] integer class indices, strides (stride_tb, stride_tt).
    loss_ptr:    [n_rows] fp32 output, contiguous; row = sequence * seq_len + position.
    BLOCK_ROWS:  rows per program (> 1 for short rows); BLOCK_V: classes per step.
    """
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
        m, s = online_logsumexp(m, s, x)
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

    def run(launch: Launch) -> torch.Tensor:
        grid = (triton.cdiv(n_rows, launch.tiles["BLOCK_ROWS"]),)
        _cross_entropy_rows_kernel[grid](
            logits_ptr=logits3, target_ptr=target2, loss_ptr=loss,
            n_rows=n_rows, seq_len=seq_len, n_classes=n_classes,
            stride_lb=logits3.stride(0), stride_lt=logits3.stride(1), stride_lv=logits3.stride(2),
            stride_tb=target2.stride(0), stride_tt=target2.stride(1),
            ignore_index=ignore_index,
            **launch.tiles, num_warps=launch.num_warps, num_stages=launch.num_stages,
        )
        return loss

    launches = cross_entropy_launches(n_rows, n_classes, interpreting())
    return run_fastest("cross_entropy", (logits.dtype, next_power_of_2(n_classes)), launches, run)
