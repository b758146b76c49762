"""Per-sample weights from class weights, and the weighted loss they feed: what `CuratedLoader(class_weights=)`
puts in the batch and what the training step does with it."""
from __future__ import annotations

import torch
from torch import Tensor


def sample_weights(class_weights: Tensor, groups: Tensor) -> Tensor:
    """Per-sample weights [B] from class weights [K] summing to 1, scaled so uniform weights give 1.

    >>> sample_weights(torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0, 1]))
    tensor([1.5000, 0.7500])
    """
    class_weights = torch.as_tensor(class_weights)
    groups = torch.as_tensor(groups).long()
    if len(groups) and (groups.min() < 0 or groups.max() >= len(class_weights)):
        raise ValueError(f"class_weights has {len(class_weights)} classes; the batch holds class "
                         f"{int(groups.max() if groups.max() >= len(class_weights) else groups.min())}")
    return class_weights.to(groups.device)[groups] * len(class_weights)


def weighted_mean(loss: Tensor, weights: Tensor) -> Tensor:
    """Σ wᵢ·lossᵢ / Σ wᵢ over a batch; equals loss.mean() for equal weights.

    >>> weighted_mean(torch.tensor([1., 3.]), torch.tensor([3., 1.]))
    tensor(1.5000)
    """
    if loss.shape != weights.shape:
        raise ValueError(f"weights: expected shape {tuple(loss.shape)} like the loss, got {tuple(weights.shape)}")
    weights = weights.to(loss)
    return (loss * weights).sum() / weights.sum()
