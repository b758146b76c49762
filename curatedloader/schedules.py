"""When selection is on. A schedule answers `active(step)` and may learn from each step's scores."""
from __future__ import annotations

from typing import Optional

import torch

from .scores import Scores


class Schedule:
    """Base: always on. `update` sees each scored super-batch; state goes into the loader's state_dict.
    `predictable` says `active(step)` is known ahead for every step, so `len(loader)` is exact; a schedule
    that learns from scores leaves it False and `len(loader)` is an upper bound."""

    predictable = False

    def active(self, step: int) -> bool:
        return True

    def update(self, step: int, scores: Scores) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Always(Schedule):
    """Select at every step."""

    predictable = True


class Steps(Schedule):
    """Select for steps in [start, end); `end=None` means for ever.

    >>> [Steps(1, 3).active(s) for s in range(4)]
    [False, True, True, False]
    """

    predictable = True

    def __init__(self, start: int = 0, end: Optional[int] = None):
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"Steps needs 0 <= start <= end, got start={start!r}, end={end!r}")
        self.start, self.end = int(start), end

    def active(self, step: int) -> bool:
        return step >= self.start and (self.end is None or step < self.end)


class Early(Schedule):
    """Early AJEST: select from step 0, and stop for good the first time the learner's mean
    super-batch loss falls below the reference's (that super-batch is still selected). Under
    torch.distributed the means are averaged over ranks first, so every rank switches at the same step.
    `stopped_at` (the switching step, or None) is the whole state, kept in `state_dict()`.

    >>> e = Early(); e.update(0, Scores(torch.tensor([0.1]), torch.tensor([0.5]))); e.active(1)
    False
    """

    def __init__(self) -> None:
        self.stopped_at: Optional[int] = None

    @property
    def predictable(self) -> bool:  # once stopped, known for good
        return self.stopped_at is not None

    def active(self, step: int) -> bool:
        return self.stopped_at is None or step <= self.stopped_at

    def update(self, step: int, scores: Scores) -> None:
        if self.stopped_at is not None:
            return
        if scores.learner is None or scores.reference is None:
            raise ValueError("Early needs learner and reference losses; the scorer returned "
                             f"learner={'none' if scores.learner is None else 'given'}, "
                             f"reference={'none' if scores.reference is None else 'given'}")
        means = torch.tensor(scores.mean_losses(), dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # a collective: every rank must call update at the same steps, NaN super-batches included
            backend_device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
            means = means.to(backend_device)
            torch.distributed.all_reduce(means)
            means = means.cpu()
        learner, reference = means.tolist()
        if learner < reference:
            self.stopped_at = step

    def state_dict(self) -> dict:
        return {"stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        self.stopped_at = state["stopped_at"]
