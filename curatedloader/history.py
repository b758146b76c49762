"""Selection from recorded training losses (InfoBatch): don't load what you would reject.

The training step reports each sample's loss back (`loader.record(losses)`); at the start of every
epoch, of the samples whose latest loss is below the mean (well learned), a random `prune` fraction is
left out of the epoch's order, so they are never loaded. The kept well-learned samples get the weight
1 / (1 - prune), which keeps the expected gradient that of the full data (InfoBatch, Qin et al., ICLR
2024); every other sample weighs 1. The last `anneal` fraction of `epochs` runs on the full data.

With `reference` (a table of reference losses by index, e.g. `irreducible_losses`), the score is the
learnability, loss − reference loss (RHO-LOSS without a scoring forward): samples that are learned or
not learnable (noisy labels) are pruned. `rescale=False` then trains on the kept ones as they are.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from .rng import derive_seed

_PRUNE = 0x51  # the word that seeds an epoch's pruning draw


@dataclass
class Plan:
    """One epoch's decision: which dataset indices are loaded, and every index's loss weight."""

    epoch: int
    keep: Tensor    # bool [n]
    weight: Tensor  # float [n]


class LossHistory:
    """Per-sample training losses by dataset index, and the epoch plans drawn from them.

    >>> history = LossHistory(prune=0.5, epochs=4, anneal=0.25)
    >>> history.record(torch.arange(4), torch.tensor([0.1, 0.2, 2.0, 3.0]))
    >>> plan = history.plan(0, 4)
    >>> plan.keep[2:].tolist(), history.plan(3, 4).keep.all().item()  # high losses kept; last epoch anneals
    ([True, True], True)

    With a CuratedLoader (`history=`), batches carry the weight as their last field ("weight" in dicts):

        loader = CuratedLoader(data, batch_size=64, shuffle=True, history=LossHistory(0.5, epochs=10))
        for epoch in range(10):
            for x, y, weight in loader:
                losses = F.cross_entropy(model(x), y, reduction="none")
                loader.record(losses)  # the ids of the batch just yielded (loader.ids)
                (losses * weight).mean().backward()
    """

    def __init__(self, prune: float = 0.5, epochs: Optional[int] = None, anneal: float = 0.125, seed: int = 0,
                 reference: Optional[Tensor] = None, rescale: bool = True):
        if not isinstance(prune, numbers.Real) or not 0.0 <= prune < 1.0:
            raise ValueError(f"prune must be a fraction in [0, 1), got {prune!r}")
        if epochs is not None and (not isinstance(epochs, numbers.Integral) or epochs < 1):
            raise ValueError(f"epochs must be a positive int (the run's length, for annealing) or None, got {epochs!r}")
        if not isinstance(anneal, numbers.Real) or not 0.0 <= anneal <= 1.0:
            raise ValueError(f"anneal must be a fraction of epochs in [0, 1], got {anneal!r}")
        if not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if reference is not None and (not isinstance(reference, Tensor) or reference.dim() != 1):
            raise TypeError("reference must be a 1-D tensor of reference losses by dataset index")
        self.prune, self.epochs, self.anneal, self.seed = float(prune), epochs, float(anneal), int(seed)
        self.reference, self.rescale = reference, bool(rescale)
        self.losses: Optional[Tensor] = None  # latest loss per index; NaN: never recorded
        self.current: Optional[Plan] = None

    def _table(self, n: int) -> Tensor:
        if self.losses is None or len(self.losses) < n:
            grown = torch.full((n,), math.nan)
            if self.losses is not None:
                grown[: len(self.losses)] = self.losses
            self.losses = grown
        return self.losses

    def record(self, ids: Sequence[int] | Tensor, losses: Tensor) -> None:
        """Store the latest training loss of each sample in `ids` (dataset indices)."""
        if not isinstance(losses, Tensor):
            raise TypeError(f"losses must be a tensor of per-sample losses, got {type(losses).__name__}")
        ids = torch.as_tensor(ids, dtype=torch.long).cpu()
        if losses.dim() != 1 or len(losses) != len(ids):
            raise ValueError(f"losses must be one loss per sample: shape ({len(ids)},) for {len(ids)} ids, "
                             f"got {tuple(losses.shape)} (use reduction='none')")
        if len(ids):
            table = self._table(int(ids.max()) + 1)
            table[ids] = losses.detach().float().cpu()

    def annealing(self, epoch: int) -> bool:
        """Whether `epoch` is in the final full-data stretch."""
        return self.epochs is not None and epoch >= math.floor(self.epochs * (1.0 - self.anneal))

    def plan(self, epoch: int, n: int) -> Plan:
        """The plan of `epoch` over `n` indices, drawn from the losses recorded so far when first asked
        for, then fixed for that epoch."""
        if self.current is not None and self.current.epoch == epoch and len(self.current.keep) == n:
            return self.current
        keep, weight = torch.ones(n, dtype=torch.bool), torch.ones(n)
        losses = self._table(n)[:n]
        if self.reference is not None:
            if len(self.reference) < n:
                raise ValueError(f"reference holds {len(self.reference)} losses; the dataset has {n} samples")
            losses = losses - self.reference[:n].float().cpu()  # learnability
        seen = ~torch.isnan(losses)
        if self.prune > 0 and seen.any() and not self.annealing(epoch):
            learned = seen & (losses < losses[seen].mean())
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, _PRUNE))
            dropped = learned & (torch.rand(n, generator=g) < self.prune)
            keep &= ~dropped
            if self.rescale:
                weight[learned & ~dropped] = 1.0 / (1.0 - self.prune)
        self.current = Plan(epoch, keep, weight)
        return self.current

    def kept(self, base: Sequence[int]) -> list[int]:
        """The indices of `base` that the current plan loads, in order."""
        if self.current is None:
            return list(base)
        base = torch.as_tensor(base, dtype=torch.long)
        return base[self.current.keep[base]].tolist()

    def weights(self, ids: Tensor) -> Tensor:
        """The current plan's loss weights of samples `ids`."""
        return self.current.weight[ids]

    def state_dict(self) -> dict:
        plan = self.current
        return {"losses": self.losses, "plan": None if plan is None else
                {"epoch": plan.epoch, "keep": plan.keep, "weight": plan.weight}}

    def load_state_dict(self, state: dict) -> None:
        self.losses = state["losses"]
        self.current = None if state["plan"] is None else Plan(**state["plan"])
