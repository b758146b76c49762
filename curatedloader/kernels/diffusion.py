"""Diffusion learnability: learner and reference weighted MSE per sample, one pass over the three tensors."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import num_splits, use_triton
from .reference import diffusion_learnability_reference, weighted_learnability
from .validation import check_float, check_same_device

MAX_TILE = 4096  # elements per tensor a program holds per step: three loads of 16 per thread at 8 warps
MAX_SAMPLES = 256  # samples per program when samples are tiny, so the grid still has many programs


@triton.jit
def _squared_error_sums_kernel(
    target_ptr, learner_ptr, reference_ptr, out_ptr,
    n_samples, sample_size, chunk,
    stride_tb, stride_td, stride_lb, stride_ld, stride_rb, stride_rd,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
):
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
    block_d = min(MAX_TILE, triton.next_power_of_2(size))
    block_b = min(MAX_TILE // block_d, MAX_SAMPLES, triton.next_power_of_2(n))
    row_programs = triton.cdiv(n, block_b)
    splits, tiles_per_split = num_splits(target.device, row_programs, triton.cdiv(size, block_d), splits)
    sums = torch.empty(2, splits, n, dtype=torch.float32, device=target.device)
    _squared_error_sums_kernel[(row_programs, splits)](
        t, pl, pr, sums,
        n, size, tiles_per_split * block_d,
        *t.stride(), *pl.stride(), *pr.stride(),
        BLOCK_B=block_b, BLOCK_D=block_d,
        num_warps=8 if block_b * block_d >= 4096 else 4,
    )
    return sums.sum(1)


def diffusion_learnability(
    target: torch.Tensor,
    pred_learner: torch.Tensor,
    pred_reference: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample ``(learnability, learner_loss, reference_loss)``, each ``[B]`` fp32, learnability = L - R.

    A model's loss for sample i is ``weight[i] * mean((pred[i] - target[i]) ** 2)`` over all non-batch
    dims (``weight=None`` means 1). Inputs ``[B, ...]`` of one shape, float32, bfloat16 or float16, any
    strides; ``weight`` has B elements (``[B]`` or ``[B, 1, ...]``).
    ``impl="auto"`` runs the Triton kernel on CUDA tensors and the PyTorch reference otherwise.

    >>> target = torch.zeros(2, 3)
    >>> diffusion_learnability(target, torch.ones(2, 3), torch.full((2, 3), 0.5), torch.tensor([1.0, 2.0]))
    (tensor([0.7500, 1.5000]), tensor([1., 2.]), tensor([0.2500, 0.5000]))
    """
    for name, x in (("target", target), ("pred_learner", pred_learner), ("pred_reference", pred_reference)):
        check_float(name, x)
    if target.dim() == 0 or target.numel() == 0:
        raise ValueError(f"target must have shape [B, ...] with at least one element, got {tuple(target.shape)}")
    for name, x in (("pred_learner", pred_learner), ("pred_reference", pred_reference)):
        if x.shape != target.shape:
            raise ValueError(f"{name} must have target's shape {tuple(target.shape)}, got {tuple(x.shape)}")
    n = target.shape[0]
    if weight is not None:
        check_float("weight", weight)
        if weight.dim() == 0 or weight.shape[0] != n or weight.numel() != n:
            raise ValueError(f"weight must have shape [{n}] (or [{n}, 1, ...]), got {tuple(weight.shape)}")
    check_same_device(target=target, pred_learner=pred_learner, pred_reference=pred_reference, weight=weight)
    if not use_triton(impl, target.device):
        return diffusion_learnability_reference(target, pred_learner, pred_reference, weight)
    learner, reference = squared_error_sums(target, pred_learner, pred_reference) / target[0].numel()
    return weighted_learnability(learner, reference, weight)
