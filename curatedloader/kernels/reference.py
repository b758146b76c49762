"""PyTorch references for the kernel ops: what ``impl="torch"`` runs, and what the kernels must match."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_mean(row_loss: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``[N]`` losses pass through; ``[B, T]`` become ``[B]``: the mean over non-ignored tokens, 0 if none."""
    if row_loss.dim() == 1:
        return row_loss
    return row_loss.sum(1) / (target != ignore_index).sum(1).clamp(min=1)


def cross_entropy_reference(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """fp32 per-sample cross-entropy; see ``per_sample_cross_entropy``."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    loss = F.cross_entropy(flat, target.reshape(-1), ignore_index=ignore_index, reduction="none")
    return sequence_mean(loss.view(target.shape), target, ignore_index)


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    chunk_rows: int = 4096,
) -> torch.Tensor:
    """``cross_entropy_reference(hidden @ weight.T + bias, target)``, in row chunks to bound the logits' memory."""
    rows = hidden.reshape(-1, hidden.shape[-1])
    w = weight.float()
    b = None if bias is None else bias.float()
    loss = torch.cat([
        cross_entropy_reference(F.linear(h.float(), w, b), t, ignore_index)
        for h, t in zip(rows.split(chunk_rows), target.reshape(-1).split(chunk_rows))
    ])
    return sequence_mean(loss.view(target.shape), target, ignore_index)


def diffusion_learnability_reference(
    target: torch.Tensor,
    pred_learner: torch.Tensor,
    pred_reference: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 ``(L - R, L, R)``; see ``diffusion_learnability``."""
    n = target.shape[0]
    t = target.reshape(n, -1).float()
    learner = (pred_learner.reshape(n, -1).float() - t).square().mean(1)
    reference = (pred_reference.reshape(n, -1).float() - t).square().mean(1)
    return weighted_learnability(learner, reference, weight)


def weighted_learnability(
    learner: torch.Tensor, reference: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(L - R, L, R)`` from unweighted per-sample losses ``[B]`` and optional per-sample weights."""
    if weight is not None:
        w = weight.reshape(learner.shape[0]).float()
        learner, reference = w * learner, w * reference
    return learner - reference, learner, reference


def sigmoid_pair_sums_reference(
    learner_img: torch.Tensor,
    learner_txt: torch.Tensor,
    reference_img: torch.Tensor,
    reference_txt: torch.Tensor,
    chosen: torch.Tensor,
    *,
    learner_scale: float,
    learner_bias: float,
    reference_scale: float,
    reference_bias: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``(rows, cols)``; see ``sigmoid_pair_sums``. Builds only the ``[B, len(chosen)]`` columns of S."""
    pos = torch.arange(learner_img.shape[0], device=chosen.device)[:, None] == chosen[None, :]

    def pair_losses(a, b, scale, bias):  # loss of pairs (a_k, b_j) for every k and chosen j
        z = scale * (a.float() @ b[chosen].float().T) + bias
        return F.softplus(torch.where(pos, -z, z))

    def sums(a_l, b_l, a_r, b_r):
        s = pair_losses(a_l, b_l, learner_scale, learner_bias) - pair_losses(a_r, b_r, reference_scale, reference_bias)
        return s.sum(1)

    return (sums(learner_img, learner_txt, reference_img, reference_txt),
            sums(learner_txt, learner_img, reference_txt, reference_img))
