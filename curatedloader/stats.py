"""Counts and timings of a CuratedLoader, for any logger."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields, replace


@dataclass
class LoaderStats:
    """`loader.stats`: what was loaded, trained on, thrown away, and where the time went.

    `overhead` is the share of wall-clock between batches (the training step included) spent
    scoring and selecting. For a logger: `since(earlier)` is the change since a `copy()` (per-step or
    per-interval figures), `reduce()` sums every rank's figures (the whole job), `reset()` zeroes them.

    >>> LoaderStats(score_ms=1.0, select_ms=1.0, step_ms=100.0).overhead
    0.02
    >>> LoaderStats(steps=5, step_ms=50.0).since(LoaderStats(steps=2, step_ms=20.0))
    LoaderStats(steps=3, seen=0, trained=0, rejected=0, skipped_samples=0, bad_shards=0, nan_scores=0, nan_batches=0, wait_ms=0.0, score_ms=0.0, select_ms=0.0, step_ms=30.0)
    """

    steps: int = 0
    seen: int = 0             # samples loaded into batches
    trained: int = 0          # samples yielded to the training loop
    rejected: int = 0         # samples scored and not selected
    skipped_samples: int = 0  # samples that failed to read or decode
    bad_shards: int = 0       # shards that were corrupt or truncated
    nan_scores: int = 0       # samples whose scores were NaN or inf
    nan_batches: int = 0      # super-batches that fell back to a uniform draw (nan="uniform")
    wait_ms: float = 0.0      # waiting for data from the workers
    score_ms: float = 0.0     # running the scorer
    select_ms: float = 0.0    # drawing the sub-batch and gathering its rows
    step_ms: float = 0.0      # wall-clock between consecutive batches

    @property
    def overhead(self) -> float:
        return (self.score_ms + self.select_ms) / self.step_ms if self.step_ms > 0 else 0.0

    def count_errors(self, errors: dict) -> None:
        """Add a source's error counts (skipped samples, bad shards) and warn its messages."""
        self.skipped_samples += errors.get("skipped_samples", 0)
        self.bad_shards += errors.get("bad_shards", 0)
        for message in errors.get("messages", ()):
            warnings.warn(message, stacklevel=3)

    def copy(self) -> "LoaderStats":
        """A snapshot, for `since` later."""
        return replace(self)

    def since(self, earlier: "LoaderStats") -> "LoaderStats":
        """The counts and times added since `earlier` (a `copy()` taken before)."""
        if not isinstance(earlier, LoaderStats):
            raise TypeError(f"earlier must be a LoaderStats (from stats.copy()), got {type(earlier).__name__}")
        return LoaderStats(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)})

    def reset(self) -> None:
        """Zero every count and time."""
        for f in fields(self):
            setattr(self, f.name, f.default)

    def reduce(self) -> "LoaderStats":
        """Every rank's counts and times summed (a collective: every rank calls it); a copy without a process
        group. The summed `overhead` is the job's: scoring and selecting time over all ranks' step time."""
        from .distributed import all_reduce_sum, rank_world

        if rank_world()[1] == 1:
            return self.copy()
        totals = all_reduce_sum([float(getattr(self, f.name)) for f in fields(self)])
        return LoaderStats(**{f.name: type(f.default)(v) for f, v in zip(fields(self), totals)})

    def as_dict(self) -> dict:
        return {**asdict(self), "overhead": self.overhead}

    def load(self, state: dict) -> None:
        for k, v in state.items():
            if k in self.__dataclass_fields__:
                setattr(self, k, v)
