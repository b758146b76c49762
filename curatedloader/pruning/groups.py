"""Per-sample group labels (classes): validation and the member indices of each group."""
from __future__ import annotations

import numpy as np


def group_members(groups, n: int, name: str = "groups") -> tuple[np.ndarray, list[np.ndarray]]:
    """(labels, member indices of each label) for `n` samples; no groups means one group of all.

    >>> group_members([1, 0, 1], 3)
    (array([0, 1]), [array([1]), array([0, 2])])
    """
    if groups is None:
        return np.array([0]), [np.arange(n)]
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"{name}: expected one label per sample, shape ({n},), got {groups.shape}")
    labels, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return labels, np.split(order, np.cumsum(np.bincount(inverse, minlength=len(labels)))[:-1])
