"""Fused Triton kernels for per-sample losses, each beside its PyTorch reference. Imports nothing else from
curatedloader, and triton only when a Triton kernel runs.

``functional`` holds the ops; each ``*_kernel`` module one op's Triton kernel, launcher and launch table;
``triton_helpers`` the ``@triton.jit`` pieces they share.
"""
from .functional import diffusion_learnability, linear_cross_entropy, per_sample_cross_entropy, sigmoid_pair_sums

__all__ = ["per_sample_cross_entropy", "diffusion_learnability", "linear_cross_entropy", "sigmoid_pair_sums"]
