"""Selection rules: which b of a super-batch's B samples to train on.

A selector is called as `selector(scores, k, generator) -> LongTensor[k]` (indices into the
super-batch, distinct). Randomness comes only from `generator`, which the loader seeds from `seed`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .rng import generator_on
from .scores import CRITERIA, Scores


def gumbel_topk(logits: Tensor, k: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
    """k distinct indices drawn without replacement with probabilities softmax(logits / temperature), in one shot.

    Top-k of logits + temperature · Gumbel noise (Gumbel-top-k trick, scaled by the temperature rather than
    dividing the logits by it, so a tiny temperature tends to top-k instead of overflowing to ties); works
    in log space, so large logits never overflow. -inf logits are never drawn while finite ones remain.

    >>> gumbel_topk(torch.tensor([0.0, 50.0, -50.0]), 1, torch.Generator().manual_seed(0))
    tensor([1])
    """
    u = uniform_noise(logits, generator)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    return torch.topk(logits.to(u.dtype) + temperature * gumbel, k).indices


def uniform_noise(like: Tensor, generator: torch.Generator) -> Tensor:
    """U(0, 1) noise shaped like `like`, made on its device (fp64 on the CPU, fp32 elsewhere) and
    determined by the CPU `generator` alone: no host-to-device copy or sync."""
    dtype = torch.float64 if like.device.type == "cpu" else torch.float32
    return torch.rand(like.shape, generator=generator_on(like.device, generator), device=like.device, dtype=dtype)


class Selector:
    """Base selector; `criterion` picks which score of `Scores` ranks the samples."""

    def __init__(self, criterion: str = "learnability"):
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.criterion = criterion

    def __call__(self, scores: Scores, k: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class JEST(Selector):
    """JEST's joint selection (Evans et al. 2024) with temperature `temperature`.

    For per-sample scores the batch score is additive, so JEST's `n_chunks` successive draws equal
    sampling without replacement from softmax(score / temperature): one Gumbel-top-k draw. Pairwise
    scores (`SigLIPScorer`) are drawn chunk by chunk on conditional scores.

    >>> JEST(n_chunks=16, temperature=1.0)(Scores(torch.tensor([3.0, 0.0, 1.0]), torch.zeros(3)), 1,
    ...                                    torch.Generator().manual_seed(0)).shape
    torch.Size([1])
    """

    def __init__(self, n_chunks: int = 16, temperature: float = 1.0, criterion: str = "learnability"):
        super().__init__(criterion)
        if not isinstance(n_chunks, int) or n_chunks < 1:
            raise ValueError(f"n_chunks must be a positive int, got {n_chunks!r}")
        if not 0 < temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number > 0 (Uniform() is its limit), got {temperature!r}")
        self.n_chunks = n_chunks
        self.temperature = float(temperature)

    def __call__(self, scores: Scores, k: int, generator: torch.Generator) -> Tensor:
        if hasattr(scores, "jest"):  # pairwise scores draw chunk by chunk on conditional logits
            return scores.jest(k, self.n_chunks, self.temperature, self.criterion, generator)
        return gumbel_topk(scores.values(self.criterion), k, generator, self.temperature)


class TopK(Selector):
    """The k highest scores (JEST's temperature → 0 limit)."""

    def __call__(self, scores: Scores, k: int, generator: torch.Generator) -> Tensor:
        if hasattr(scores, "topk"):
            return scores.topk(k, self.criterion)
        return torch.topk(scores.values(self.criterion), k).indices


class Uniform(Selector):
    """k of B uniformly at random: the equal-trained-samples baseline; ignores the scores."""

    def __call__(self, scores: Scores, k: int, generator: torch.Generator) -> Tensor:
        return uniform(len(scores), k, generator)


def uniform(n: int, k: int, generator: torch.Generator) -> Tensor:
    """k distinct indices of range(n), uniformly at random."""
    return torch.randperm(n, generator=generator)[:k]
