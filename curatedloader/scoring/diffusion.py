"""Scoring for diffusion training in the EDM convention (Karras et al. 2022): `model(noisy, sigma) -> denoised`."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..batch import get_field
from ..kernels import diffusion_learnability
from ..rng import generator_on
from ..scores import Scorer, Scores, model_device


def edm_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM's loss weight (σ² + σ_data²) / (σ·σ_data)², which makes the loss of a perfect denoiser O(1).

    >>> edm_weight(torch.tensor([0.5]))
    tensor([8.])
    """
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_noise(
    x: Tensor, p_mean: float = -1.2, p_std: float = 1.2, generator: Optional[torch.Generator] = None
) -> tuple[Tensor, Tensor]:
    """One noise level per row, ln σ ~ N(p_mean, p_std²) in fp32, and Gaussian noise ε shaped like `x`.

    >>> sigma, eps = sample_noise(torch.zeros(4, 3), generator=torch.Generator().manual_seed(0))
    >>> sigma.shape, eps.shape
    (torch.Size([4]), torch.Size([4, 3]))
    """
    sigma = (torch.randn(x.shape[0], generator=generator, device=x.device) * p_std + p_mean).exp()
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return sigma, eps


def add_noise(x: Tensor, sigma: Tensor, eps: Tensor) -> Tensor:
    """x + σ·ε with one σ per row, in the dtype of `x`."""
    return x + (sigma.reshape(-1, *[1] * (x.dim() - 1)) * eps).to(x.dtype)


class DiffusionScorer(Scorer):
    """Per-sample EDM losses of a learner and a reference denoiser on the same noisy inputs.

    Each sample x gets one (σ, ε), drawn from the loader's seed and shared by both models; its loss is
    weight(σ) · mean((D(x + σε; σ) − x)²) with EDM's weight, and learnability = L − R. The reference is
    either a separate smaller model or a frozen EMA snapshot of the learner (`copy.deepcopy` it, and
    update it with `torch.optim.swa_utils` or by hand); the same model can then guide sampling
    (autoguidance, Karras et al. 2024). With `return_noise=True` the loader attaches each chosen
    sample's σ (key "sigma") and ε (key "noise") to the sub-batch, so training can reuse them; batches
    yielded without selection (e.g. after `Early` switches off) carry none::

        scorer = DiffusionScorer(learner, reference, return_noise=True)
        loader = CuratedLoader(dataset, batch_size=256, scorer=scorer, schedule=Early())
        for x, *noise in loader:  # a tuple batch gets σ and ε appended; a dict gets new keys
            sigma, eps = noise or sample_noise(x, generator=gen)
            err = (learner(add_noise(x, sigma, eps), sigma) - x) ** 2
            loss = (edm_weight(sigma) * err.flatten(1).mean(1)).mean()
    """

    def __init__(
        self,
        learner: Callable[[Tensor, Tensor], Tensor],
        reference: Callable[[Tensor, Tensor], Tensor],
        *,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        input_key=0,
        return_noise: bool = False,
    ):
        for name, model in (("learner", learner), ("reference", reference)):
            if not callable(model):
                raise ValueError(f"{name} must be a denoiser model(noisy, sigma) -> denoised, got {type(model).__name__}")
        if not (isinstance(sigma_data, (int, float)) and sigma_data > 0 and math.isfinite(sigma_data)):
            raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
        if not (isinstance(p_std, (int, float)) and p_std >= 0 and math.isfinite(p_std)):
            raise ValueError(f"p_std must be a non-negative number, got {p_std!r}")
        if not (isinstance(p_mean, (int, float)) and math.isfinite(p_mean)):
            raise ValueError(f"p_mean must be a finite number, got {p_mean!r}")
        self.learner, self.reference = learner, reference
        self.sigma_data, self.p_mean, self.p_std = float(sigma_data), float(p_mean), float(p_std)
        self.input_key, self.return_noise = input_key, return_noise

    def models(self) -> list[nn.Module]:
        return [m for m in (self.learner, self.reference) if isinstance(m, nn.Module)]

    def score(self, batch, ids=None, generator: Optional[torch.Generator] = None) -> Scores:
        x = get_field(batch, self.input_key)
        if not (isinstance(x, Tensor) and x.is_floating_point() and x.dim() >= 2):
            raise ValueError(
                f"batch field {self.input_key!r} must be a float tensor [B, ...], got "
                f"{type(x).__name__}{tuple(x.shape) if isinstance(x, Tensor) else ''}"
            )
        x = x.to(self.device, non_blocking=True)
        sigma, eps = sample_noise(x, self.p_mean, self.p_std, generator_on(x.device, generator))
        noisy = add_noise(x, sigma, eps)
        pred_learner = self.learner(noisy, sigma)
        ref_device = model_device(self.reference, x.device)  # the reference may live on another device
        pred_reference = self.reference(noisy.to(ref_device), sigma.to(ref_device))
        pred_reference = pred_reference.to(x.device) if isinstance(pred_reference, Tensor) else pred_reference
        for name, pred in (("learner", pred_learner), ("reference", pred_reference)):
            if not isinstance(pred, Tensor) or pred.shape != x.shape:
                got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
                raise ValueError(f"{name} returned {got}; expected a denoised tensor of shape {tuple(x.shape)}")
        weight = edm_weight(sigma, self.sigma_data)
        _, learner_loss, reference_loss = diffusion_learnability(x, pred_learner, pred_reference, weight)
        extras = {"sigma": sigma, "noise": eps} if self.return_noise else {}
        return Scores(learner=learner_loss, reference=reference_loss, extras=extras)
