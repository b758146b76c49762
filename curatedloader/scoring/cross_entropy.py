"""Per-sample cross-entropy scores for classifiers and sequence models (RHO-LOSS, JEST)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..batch import get_field
from ..kernels import per_sample_cross_entropy
from ..scores import Scorer, Scores


def to_device(x: Any, device: torch.device) -> Any:
    """Move every tensor of a nested structure to `device`."""
    return torch.utils._pytree.tree_map(lambda t: t.to(device, non_blocking=True) if isinstance(t, Tensor) else t, x)


class CrossEntropyScorer(Scorer):
    """Learner and reference cross-entropy per sample (per sequence: the mean over non-ignored tokens).

    Batches are `(input, target)` tuples or dicts (`input_key`, `target_key`). The reference loss comes
    from the `reference` model, or from `reference_losses`, a table indexed by sample id (RHO-LOSS's
    irreducible losses, see `irreducible_losses`), so the reference need not run online.

    >>> scorer = CrossEntropyScorer(model, reference=ref_model)
    >>> scorer = CrossEntropyScorer(model, reference_losses=irreducible_losses(ref_model, holdout_free_set))
    """

    def __init__(
        self,
        learner: nn.Module,
        reference: Optional[nn.Module] = None,
        *,
        input_key: Any = 0,
        target_key: Any = 1,
        ignore_index: int = -100,
        reference_losses: Optional[Tensor | Mapping] = None,
    ):
        if not callable(learner):
            raise ValueError(f"learner must be a callable model, got {type(learner).__name__}")
        if reference is not None and reference_losses is not None:
            raise ValueError("give reference or reference_losses, not both")
        if isinstance(reference_losses, Tensor) and (reference_losses.dim() != 1 or not reference_losses.is_floating_point()):
            raise ValueError(
                f"reference_losses must be a float vector indexed by sample id, got shape "
                f"{tuple(reference_losses.shape)} dtype {reference_losses.dtype}"
            )
        self.learner, self.reference, self.reference_losses = learner, reference, reference_losses
        self.input_key, self.target_key, self.ignore_index = input_key, target_key, ignore_index

    def models(self) -> list[nn.Module]:
        return [m for m in (self.learner, self.reference) if isinstance(m, nn.Module)]

    def score(self, batch, ids=None, generator=None) -> Scores:
        device = self.device
        x = to_device(get_field(batch, self.input_key), device)
        y = to_device(get_field(batch, self.target_key), device)
        loss = lambda model: per_sample_cross_entropy(model(x), y, ignore_index=self.ignore_index)  # noqa: E731
        learner = loss(self.learner)
        if self.reference is not None:
            reference = loss(self.reference)
        elif self.reference_losses is not None:
            reference = self._lookup(ids).to(learner.device)
        else:
            reference = None
        return Scores(learner=learner, reference=reference)

    def _lookup(self, ids) -> Tensor:
        if ids is None:
            raise ValueError("reference_losses needs sample ids; the loader passes them with each super-batch")
        table = self.reference_losses
        if isinstance(table, Tensor):
            return table[torch.as_tensor(ids, device=table.device)].float()
        keys = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return torch.tensor([float(table[k]) for k in keys])


def irreducible_losses(
    reference: nn.Module, dataset: Dataset, *, batch_size: int = 256, input_key: Any = 0, target_key: Any = 1,
    ignore_index: int = -100,
) -> Tensor:
    """Per-sample loss of a reference model over a map-style dataset, as a table indexed by sample id.

    >>> table = irreducible_losses(ref_model, train_set)   # Tensor[len(train_set)]
    """
    scorer = CrossEntropyScorer(reference, input_key=input_key, target_key=target_key, ignore_index=ignore_index)
    out = [scorer(batch).learner.cpu() for batch in DataLoader(dataset, batch_size=batch_size)]
    return torch.cat(out) if out else torch.zeros(0)
