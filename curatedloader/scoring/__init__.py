"""Scorers: callables that turn a super-batch into per-sample learner and reference losses."""
from .cross_entropy import CrossEntropyScorer, irreducible_losses
from .diffusion import DiffusionScorer
from .siglip import PairScores, SigLIPScorer

__all__ = ["CrossEntropyScorer", "DiffusionScorer", "irreducible_losses", "PairScores", "SigLIPScorer"]
