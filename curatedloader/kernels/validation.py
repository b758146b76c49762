"""Argument checks shared by the kernel ops: each error names the argument and what was expected."""
from __future__ import annotations

import torch


def check_float(name: str, x: object) -> torch.Tensor:
    """Raise TypeError unless ``x`` is a floating-point tensor; return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32, bfloat16 or float16), got {x.dtype}")
    return x


def check_target(target: object, shape: torch.Size, n_classes: int, ignore_index: int) -> torch.Tensor:
    """Raise unless ``target`` holds integer class indices of ``shape`` in [0, n_classes) or ``ignore_index``."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class indices, got {target.dtype}")
    if target.shape != shape:
        raise ValueError(f"target must have shape {tuple(shape)}, got {tuple(target.shape)}")
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bad.any():  # one small reduction; a wrong index would otherwise read out of bounds in the kernel
        raise ValueError(
            f"target must be in [0, {n_classes}) or ignore_index={ignore_index}, found {target[bad][0].item()}"
        )
    return target


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ValueError naming the first tensor whose device differs from the first tensor given."""
    given = [(name, t) for name, t in tensors.items() if isinstance(t, torch.Tensor)]
    first_name, first = given[0]
    for name, t in given[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} must be on the same device as {first_name} ({first.device}), got {t.device}")
