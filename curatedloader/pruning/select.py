"""Coreset selection from typicality scores: easy, hard or coverage-centric (CCS), with exact group quotas."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .groups import group_members

STRATEGIES = ("easy", "hard", "ccs")


def select(scores, keep, *, strategy: str = "easy", groups=None, drop=None, seed: int = 0,
           strata: int = 50, hard_cutoff: float = 0.0) -> dict[str, np.ndarray]:
    """Choose samples to keep; scores are higher = more typical (easier).

    keep: a fraction in (0, 1] or a count of the candidates (samples not flagged in `drop`), or a mapping
        {group: count}. With `groups`, a fraction or count is split over groups in proportion to their
        candidates (largest remainders), so every group keeps exactly its quota.
    strategy: "easy" keeps the highest scores, "hard" the lowest, "ccs" (Zheng et al. 2023) drops the
        `hard_cutoff` fraction of hardest candidates, splits the score range into `strata` equal-width
        bins and fills the budget from the smallest bin up, sampling at random within a bin.
    Returns {"indices": sorted int64, "scores": their scores, "weights": float32, how many candidates of
        its group (and CCS bin) each kept sample stands for, scaled to mean 1}.

    >>> sel = select(scores, 0.5, strategy="ccs", groups=labels, drop=near_duplicates(feats))
    >>> save_keep("keep.txt", feats.ids[sel["indices"]])
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise ValueError(f"scores: expected a finite 1-D array, got shape {s.shape}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if not 0 <= hard_cutoff < 1:
        raise ValueError(f"hard_cutoff: expected 0 <= hard_cutoff < 1, got {hard_cutoff}")
    if isinstance(strata, bool) or not isinstance(strata, int) or strata < 1:
        raise ValueError(f"strata: expected a positive int, got {strata!r}")
    candidates = np.ones(len(s), bool)
    if drop is not None:
        drop = np.asarray(drop)
        if drop.dtype != bool or drop.shape != s.shape:
            raise ValueError(f"drop: expected a bool array of shape {s.shape}, got {drop.dtype} {drop.shape}")
        candidates = ~drop
    labels, members = group_members(groups, len(s))
    members = [m[candidates[m]] for m in members]
    rng = np.random.default_rng(seed)
    indices, weights = [], []
    for label, idx, q in zip(labels, members, _quotas(keep, labels, [len(m) for m in members], groups)):
        if strategy == "ccs":
            chosen, w = _ccs(s[idx], q, strata, hard_cutoff, rng)
        else:
            order = np.argsort(-s[idx] if strategy == "easy" else s[idx], kind="stable")
            chosen, w = order[:q], np.full(q, len(idx) / max(q, 1))
        indices.append(idx[chosen])
        weights.append(w)
    indices, weights = np.concatenate(indices), np.concatenate(weights)
    order = np.argsort(indices)
    weights = weights[order] / weights.mean() if len(weights) else weights
    return {"indices": indices[order], "scores": s[indices[order]], "weights": weights.astype(np.float32)}


def _quotas(keep, labels, sizes: list[int], groups) -> list[int]:
    total = sum(sizes)
    if isinstance(keep, Mapping):
        if groups is None:
            raise ValueError("keep: a {group: count} mapping needs groups")
        quotas = []
        for label, size in zip(labels.tolist(), sizes):
            q = keep.get(label)
            if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 0:
                raise ValueError(f"keep: expected a count >= 0 for group {label}, got {q!r}")
            if q > size:
                raise ValueError(f"keep: group {label} has {size} candidates, too few for its quota {q}")
            quotas.append(int(q))
        return quotas
    if isinstance(keep, (float, np.floating)) and 0 < keep <= 1:
        count = round(keep * total)
    elif isinstance(keep, (int, np.integer)) and not isinstance(keep, bool) and 0 <= keep <= total:
        count = int(keep)
    else:
        raise ValueError(f"keep: expected a fraction in (0, 1], a count in [0, {total}] or a "
                         f"{{group: count}} mapping, got {keep!r}")
    ideal = count * np.array(sizes, dtype=np.float64) / max(total, 1)
    quotas = np.floor(ideal).astype(int)
    quotas[np.argsort(quotas - ideal, kind="stable")[:count - quotas.sum()]] += 1  # largest remainders
    return quotas.tolist()


def _ccs(s: np.ndarray, q: int, strata: int, hard_cutoff: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Coverage-centric sampling of q of the scores `s`: (chosen positions, weights)."""
    order = np.argsort(s, kind="stable")[int(hard_cutoff * len(s)):]  # hardest (lowest) first, cut off
    if q > len(order):
        raise ValueError(f"hard_cutoff: leaves {len(order)} candidates in a group that must keep {q}")
    if q == 0:
        return order[:0], np.zeros(0)
    lo, hi = s[order[0]], s[order[-1]]
    bins = np.minimum(((s[order] - lo) / ((hi - lo) or 1) * strata).astype(int), strata - 1)
    stratum = [order[bins == b] for b in range(strata)]
    stratum = sorted((m for m in stratum if len(m)), key=len)
    chosen, weights = [], []
    for i, m in enumerate(stratum):
        take = min(len(m), q // (len(stratum) - i))
        chosen.append(rng.choice(m, take, replace=False))
        weights.append(np.full(take, len(m) / max(take, 1)))
        q -= take
    return np.concatenate(chosen), np.concatenate(weights)
