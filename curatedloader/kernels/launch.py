"""Choosing between the Triton kernels and the PyTorch references, and sizing kernel grids."""
from __future__ import annotations

import os

import torch
import triton

IMPLS = ("auto", "triton", "torch")


def use_triton(impl: str, device: torch.device) -> bool:
    """``impl="auto"`` runs Triton on CUDA tensors and PyTorch otherwise.

    >>> use_triton("auto", torch.device("cpu"))
    False
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch" or (impl == "auto" and device.type != "cuda"):
        return False
    if device.type != "cuda" and not interpreting():
        raise ValueError(f"impl='triton' on {device.type} tensors needs TRITON_INTERPRET=1 set before triton runs")
    return True


def interpreting() -> bool:
    """True under Triton's CPU interpreter, where kernels upcast before ``tl.dot``."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def num_splits(device: torch.device, row_programs: int, n_tiles: int, splits: int | None = None) -> tuple[int, int]:
    """Split each row's ``n_tiles`` tiles into chunks so that the grid fills the GPU.

    Returns ``(splits, tiles_per_split)`` with every split non-empty; the partial results are combined
    afterwards in a fixed order, so the result is deterministic. Under the interpreter one split is fastest.
    """
    if splits is None:
        wanted = 8 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        splits = triton.cdiv(wanted, row_programs)
    tiles_per_split = triton.cdiv(n_tiles, max(1, min(splits, n_tiles)))
    return triton.cdiv(n_tiles, tiles_per_split), tiles_per_split
