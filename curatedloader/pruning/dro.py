"""Class reweighting by group DRO against a reference model (DoReMi's rule, as in "Pruning then
Reweighting", Li et al. 2024); `curatedloader.weights` turns the weights into a weighted loss."""
from __future__ import annotations

import torch
from torch import Tensor


class GroupDRO:
    """Group weights that grow where the learner's loss exceeds the reference's:

        log w ← log w + eta·max(L_g − R_g, 0);  w ← softmax;  w ← (1 − smoothing)·w + smoothing/K

    `.weights` (sums to 1) is updated in place, so a loader holding it sees every update;
    `.average_weights` is the mean over all updates (DoReMi's final weights).

    >>> dro = GroupDRO(10)
    >>> dro.update(group_mean(loss, y, 10), group_mean(ref_loss, y, 10))
    >>> loss = weighted_mean(per_sample_loss, sample_weights(dro.weights, y))
    """

    def __init__(self, num_groups: int, *, eta: float = 1.0, smoothing: float = 1e-3):
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"num_groups: expected a positive int, got {num_groups!r}")
        if not 0 <= smoothing <= 1:
            raise ValueError(f"smoothing: expected 0 <= smoothing <= 1, got {smoothing}")
        self.eta, self.smoothing = eta, smoothing
        self.weights = torch.full((num_groups,), 1.0 / num_groups)
        self._sum = torch.zeros(num_groups, dtype=torch.float64)  # float32 would drift over a long run
        self.steps = 0

    @torch.no_grad()
    def update(self, learner_group_loss: Tensor, reference_group_loss: Tensor) -> Tensor:
        """One DRO step from per-group mean losses [K] of the learner and the reference; returns `.weights`."""
        k = len(self.weights)
        losses = [torch.as_tensor(x, dtype=torch.float32).detach().cpu()
                  for x in (learner_group_loss, reference_group_loss)]
        for name, x in zip(("learner_group_loss", "reference_group_loss"), losses):
            if x.shape != (k,) or not torch.isfinite(x).all():
                raise ValueError(f"{name}: expected {k} finite per-group losses, got shape {tuple(x.shape)}")
        excess = (losses[0] - losses[1]).clamp_min(0)
        w = torch.softmax(self.weights.log() + self.eta * excess, 0)
        self.weights.copy_((1 - self.smoothing) * w + self.smoothing / k)
        self._sum += self.weights
        self.steps += 1
        return self.weights

    @property
    def average_weights(self) -> Tensor:
        """Mean of `.weights` over all updates (uniform before the first)."""
        return (self._sum / self.steps).float() if self.steps else self.weights.clone()

    def state_dict(self) -> dict:
        return {"weights": self.weights.clone(), "sum": self._sum.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.weights.copy_(state["weights"])
        self._sum.copy_(state["sum"])
        self.steps = state["steps"]


def group_mean(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Mean of `values` [B] per group [K]; 0 for a group absent from the batch (so its DRO excess is 0).

    >>> group_mean(torch.tensor([1., 3., 5.]), torch.tensor([0, 0, 2]), 3)
    tensor([2., 0., 5.])
    """
    values = values.detach().float()
    groups = groups.to(values.device).long()
    sums = torch.zeros(num_groups, device=values.device).index_add_(0, groups, values)
    counts = torch.bincount(groups, minlength=num_groups)[:num_groups].clamp_min(1)
    return sums / counts
