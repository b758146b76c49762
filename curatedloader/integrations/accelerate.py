"""Accelerate's gradient accumulation with a CuratedLoader.

`accelerator.prepare` passes a CuratedLoader through untouched (it is not a DataLoader), so Accelerate
never learns where an epoch's data ends, and `accelerator.accumulate()` would carry the gradients of an
epoch's last, incomplete accumulation window into the next epoch. `end_of_data_aware(loader)` iterates
one epoch while telling Accelerate's `GradientState` which batch is the last, as a prepared DataLoader
does, so that window is synchronised and stepped at the epoch's end.
"""
from __future__ import annotations

from typing import Any, Iterator

from accelerate.state import GradientState


class _EpochTracker:
    """What Accelerate's GradientState reads off the dataloader being iterated."""

    def __init__(self) -> None:
        self.end_of_dataloader, self.remainder = False, -1  # no padded samples: ranks split data evenly


def end_of_data_aware(loader: Any) -> Iterator[Any]:
    """The batches of one epoch of `loader`, with Accelerate told when the last one is yielded.

    The last batch is known from `len(loader)` (exact for the `Always` and `Steps` schedules; `Early`'s
    length is an upper bound, so its last window is not synchronised early). Nothing is read ahead, so
    `loader.state_dict()` stays exact between batches.

    >>> for batch in end_of_data_aware(loader):
    ...     with accelerator.accumulate(model):
    ...         train_step(batch)
    """
    it = iter(loader)
    tracker, state = _EpochTracker(), GradientState()
    state._add_dataloader(tracker)
    try:
        for count, batch in enumerate(it, 1):
            tracker.end_of_dataloader = count == len(it)
            yield batch
    finally:
        state._remove_dataloader(tracker)
