"""Scorers: callables that turn a super-batch into per-sample learner and reference losses."""
from .cross_entropy import CrossEntropyScorer, irreducible_losses

__all__ = ["CrossEntropyScorer", "irreducible_losses"]
