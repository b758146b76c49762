"""Selection rules: which b of a super-batch's B samples to train on.

A selector is called as `selector(scores, k, generator) -> LongTensor[k]` (indices into the
super-batch, distinct). Randomness comes only from `generator`, which the loader seeds from `seed`.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

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


@runtime_checkable
class PairwiseScores(Protocol):
    """Scores whose batch score is not additive (SigLIP): per-sample `values(criterion)` (the diagonal S_kk)
    and `pair_sums(chosen, criterion)`, the row and column sums of the pair scores S over `chosen`."""

    def values(self, criterion: str = "learnability") -> Tensor: ...
    def pair_sums(self, chosen: Tensor, criterion: str = "learnability") -> tuple[Tensor, Tensor]: ...


def chunked_selection(diag: Tensor, pair_sums: Callable[[Tensor], tuple[Tensor, Tensor]], k: int, n_chunks: int,
                      draw: Callable[[Tensor, int], Tensor]) -> Tensor:
    """k distinct indices chosen in `n_chunks` chunks by conditional score (JEST's joint selection).

    The first chunk is drawn on `diag` (S_kk); every later one on S_kk + Σ_{j∈A} S_kj + Σ_{i∈A} S_ik, the
    gain of adding k to the chosen set A, with A masked. `pair_sums(new)` returns the row and column sums
    of S over the indices `new`, so the running sums grow by the newly chosen chunk only.
    `draw(logits, m)` picks m indices (a Gumbel-top-m draw for JEST, top-m for TopK).

    >>> chunked_selection(torch.tensor([0.0, 3.0, 1.0]), lambda new: (torch.zeros(3), torch.zeros(3)), 2, 2,
    ...                   lambda logits, m: torch.topk(logits, m).indices)
    tensor([1, 2])
    """
    if not 0 <= k <= diag.shape[0]:
        raise ValueError(f"k must be in [0, {diag.shape[0]}], got {k}")
    sizes = [s for s in (k // n_chunks + (i < k % n_chunks) for i in range(n_chunks)) if s]
    logits = diag.float().clone()
    picked = []
    for i, size in enumerate(sizes):
        new = draw(logits, size)
        picked.append(new)
        logits[new] = float("-inf")
        if i + 1 < len(sizes):
            rows, cols = pair_sums(new)
            logits += rows + cols
    return torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long, device=diag.device)


def _chunked(scores: PairwiseScores, k: int, n_chunks: int, criterion: str,
             draw: Callable[[Tensor, int], Tensor]) -> Tensor:
    return chunked_selection(scores.values(criterion), lambda new: scores.pair_sums(new, criterion), k, n_chunks, draw)


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
        if isinstance(scores, PairwiseScores):  # chunk by chunk on conditional logits
            draw = lambda logits, m: gumbel_topk(logits, m, generator, self.temperature)  # noqa: E731
            return _chunked(scores, k, self.n_chunks, self.criterion, draw)
        return gumbel_topk(scores.values(self.criterion), k, generator, self.temperature)


class TopK(Selector):
    """The k highest scores (JEST's temperature → 0 limit); for pairwise scores, the greedy chunked choice.

    >>> TopK()(Scores(torch.tensor([3.0, 0.0, 1.0]), torch.zeros(3)), 2, torch.Generator())
    tensor([0, 2])
    """

    def __init__(self, n_chunks: int = 16, criterion: str = "learnability"):
        super().__init__(criterion)
        if not isinstance(n_chunks, int) or n_chunks < 1:
            raise ValueError(f"n_chunks must be a positive int, got {n_chunks!r}")
        self.n_chunks = n_chunks

    def __call__(self, scores: Scores, k: int, generator: torch.Generator) -> Tensor:
        if isinstance(scores, PairwiseScores):
            return _chunked(scores, k, self.n_chunks, self.criterion, lambda logits, m: torch.topk(logits, m).indices)
        return torch.topk(scores.values(self.criterion), k).indices


class Uniform(Selector):
    """k of B uniformly at random: the equal-trained-samples baseline; ignores the scores."""

    def __call__(self, scores: Scores, k: int, generator: torch.Generator) -> Tensor:
        return uniform(len(scores), k, generator)


def uniform(n: int, k: int, generator: torch.Generator) -> Tensor:
    """k distinct indices of range(n), uniformly at random."""
    return torch.randperm(n, generator=generator)[:k]
