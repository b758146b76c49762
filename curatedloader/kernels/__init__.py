"""Fused Triton kernels for per-sample losses, each beside its PyTorch reference. Imports nothing else from curatedloader."""
from .cross_entropy import per_sample_cross_entropy
from .diffusion import diffusion_learnability
from .linear_cross_entropy import linear_cross_entropy
from .sigmoid_pair_sums import sigmoid_pair_sums

__all__ = ["per_sample_cross_entropy", "diffusion_learnability", "linear_cross_entropy", "sigmoid_pair_sums"]
