"""Squared-error sums kernel for diffusion learnability: learner and reference in one pass over the three
tensors; launcher and launch table."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import Launch, RowTile, interpreting, next_power_of_2, num_splits, row_launches, run_fastest


# H100: three loads of 16 values per thread at 8 warps; tiny samples share a tile, up to 256 of them, so the
# grid still has many programs. The interpreter's 4096 is what the tests' shapes are built around.
DIFFUSION_TILES = {
    "interpreter": (RowTile(4096, 8, max_rows=256),),
    "gpu": (RowTile(4096, 8, max_rows=256), RowTile(2048, 4, max_rows=128), RowTile(8192, 8, max_rows=256)),
}


def diffusion_launches(n_samples: int, sample_size: int, interpret: bool) -> list[Launch]:
    """The launches ``squared_error_sums`` picks from for this shape (one under the interpreter)."""
    tiles = DIFFUSION_TILES["interpreter" if interpret else "gpu"]
    return row_launches(tiles, n_samples, sample_size, ("BLOCK_B", "BLOCK_D"))


@triton.jit
def _squared_error_sums_kernel(
    target_ptr, learner_ptr, reference_ptr, out_ptr,
    n_samples, sample_size, chunk,
    stride_tb, stride_td, stride_lb, stride_ld, stride_rb, stride_rd,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[0, split, i] = Σ (learner - target)², out[1, split, i] = Σ (reference - target)² over sample i's
    elements [split * chunk, (split + 1) * chunk).

    target_ptr, learner_ptr, reference_ptr: [n_samples, sample_size] views, fp32/bf16/fp16, each with its
                 own (sample, element) strides.
    out_ptr:     [2, n_splits, n_samples] fp32, contiguous; the grid's second axis is the split.
    BLOCK_B:     samples per program; BLOCK_D: elements per sample per step.
    """
    samples = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    split = tl.program_id(1)
    # Samples past the end recompute the last one, so loads need no sample mask; they are not stored.
    sample = tl.minimum(samples, n_samples - 1).to(tl.int64)[:, None]
    t_ptr = target_ptr + sample * stride_tb
    l_ptr = learner_ptr + sample * stride_lb
    r_ptr = reference_ptr + sample * stride_rb
    start = split * chunk
    end = tl.minimum(start + chunk, sample_size)
    # Per-lane partial sums, reduced once at the end: fewer reductions and smaller rounding error.
    acc_l = tl.zeros([BLOCK_B, BLOCK_D], tl.float32)
    acc_r = tl.zeros([BLOCK_B, BLOCK_D], tl.float32)
    for d0 in range(start, end, BLOCK_D):
        d = (d0 + tl.arange(0, BLOCK_D)).to(tl.int64)[None, :]
        mask = d < end
        t = tl.load(t_ptr + d * stride_td, mask=mask, other=0.0).to(tl.float32)
        el = tl.load(l_ptr + d * stride_ld, mask=mask, other=0.0).to(tl.float32) - t
        er = tl.load(r_ptr + d * stride_rd, mask=mask, other=0.0).to(tl.float32) - t
        acc_l += el * el
        acc_r += er * er
    out = split * n_samples + samples
    n_out = tl.num_programs(1) * n_samples
    tl.store(out_ptr + out, tl.sum(acc_l, axis=1), mask=samples < n_samples)
    tl.store(out_ptr + n_out + out, tl.sum(acc_r, axis=1), mask=samples < n_samples)


def _per_sample_view(x: torch.Tensor, order: list[int]) -> torch.Tensor:
    """``[B, D]`` with the non-batch dims in ``order``: a view when memory allows, a copy otherwise."""
    return x.permute(0, *order).reshape(x.shape[0], -1)


def squared_error_sums(
    target: torch.Tensor, pred_learner: torch.Tensor, pred_reference: torch.Tensor, splits: int | None = None
) -> torch.Tensor:
    """Launch the kernel: fp32 ``[2, B]`` sums of squared errors (learner, reference) per sample.

    ``splits`` cuts each sample into that many chunks (default: enough programs to fill the GPU); the
    chunks' sums are added afterwards in a fixed order, so the result is deterministic.
    """
    n, size = target.shape[0], target[0].numel()
    # The mean ignores element order, so read each sample in target's memory order: channels-last and
    # other dense layouts stay views instead of copies.
    order = sorted(range(1, target.dim()), key=lambda i: -target.stride(i))
    t, pl, pr = (_per_sample_view(x, order) for x in (target, pred_learner, pred_reference))

    def run(launch: Launch) -> torch.Tensor:
        block_b, block_d = launch.tiles["BLOCK_B"], launch.tiles["BLOCK_D"]
        row_programs = triton.cdiv(n, block_b)
        n_splits, tiles_per_split = num_splits(target.device, row_programs, triton.cdiv(size, block_d), splits)
        sums = torch.empty(2, n_splits, n, dtype=torch.float32, device=target.device)
        _squared_error_sums_kernel[(row_programs, n_splits)](
            target_ptr=t, learner_ptr=pl, reference_ptr=pr, out_ptr=sums,
            n_samples=n, sample_size=size, chunk=tiles_per_split * block_d,
            stride_tb=t.stride(0), stride_td=t.stride(1), stride_lb=pl.stride(0), stride_ld=pl.stride(1),
            stride_rb=pr.stride(0), stride_rd=pr.stride(1),
            **launch.tiles, num_warps=launch.num_warps, num_stages=launch.num_stages,
        )
        return sums.sum(1)

    launches = diffusion_launches(n, size, interpreting())
    bucket = (target.dtype, next_power_of_2(size), min(next_power_of_2(n), 256))
    return run_fastest("diffusion", bucket, launches, run)
