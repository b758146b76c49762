"""The selection stage of a CuratedLoader: score a super-batch, check what the user's objects return,
draw the sub-batch. It owns the scorer, selector, schedule, NaN policy and their random generators."""
from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from .batch import attach, index_batch
from .rng import derive_seed
from .schedules import Always, Schedule
from .scores import Scorer, Scores, as_scores
from .selection import JEST, uniform
from .stats import LoaderStats

NAN_POLICIES = ("raise", "uniform")
_SELECT, _SCORE = 1, 2  # words that keep the two generators' seeds apart


class _FunctionScorer:
    """A plain `f(batch) -> Tensor[B] | Scores`, called as the built-in scorers are, without autograd."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, batch: Any, ids: Any, generator: torch.Generator) -> Any:
        with torch.inference_mode():
            return self.fn(batch)


def as_scorer(scorer: Any) -> Optional[Callable]:
    """`scorer` as a callable `(batch, ids, generator)`; None stays None.

    >>> as_scorer(lambda batch: batch[0])((torch.ones(2),), None, None)
    tensor([1., 1.])
    """
    if scorer is None:
        return None
    if isinstance(scorer, type):
        raise TypeError(f"scorer must be an instance, got the class {scorer.__name__}; call it: {scorer.__name__}(...)")
    if isinstance(scorer, Scorer):
        return lambda batch, ids, generator: scorer(batch, ids, generator=generator)
    if not callable(scorer):
        raise TypeError(f"scorer must be callable on a batch, got {type(scorer).__name__}")
    return _FunctionScorer(scorer)


def check_component(value: Any, name: str, example: str, method: Optional[str] = None) -> None:
    """A TypeError naming `name` unless `value` is an instance (not a class) that has `method` (or is callable)."""
    if isinstance(value, type):
        raise TypeError(f"{name} must be an instance, got the class {value.__name__}; call it: {example}")
    ok = callable(getattr(value, method, None)) if method else callable(value)
    if not ok:
        what = f"an object with a {method}() method" if method else "callable"
        raise TypeError(f"{name} must be {what}, e.g. {example}; got {type(value).__name__}")


def check_signature(fn: Callable, name: str, call: str, n_args: int) -> None:
    """A TypeError naming `name` unless `fn` can be called with `n_args` positional arguments."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return
    try:
        signature.bind(*[None] * n_args)
    except TypeError as e:
        raise TypeError(f"{name} must be callable as {call}; its signature {signature} does not fit ({e})") from None


def check_indices(chosen: Any, n: int, k: int, selector: Any) -> Tensor:
    """The selector's output as sorted CPU indices, or a ValueError/TypeError naming the selector."""
    name = f"selector {selector!r}"
    if not isinstance(chosen, Tensor):
        raise TypeError(f"{name} returned {type(chosen).__name__}; expected a LongTensor of {k} indices")
    if chosen.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) or chosen.dim() != 1:
        raise TypeError(f"{name} returned a tensor of dtype {chosen.dtype} and shape {tuple(chosen.shape)}; "
                        f"expected a 1-D LongTensor of {k} indices")
    chosen = torch.sort(chosen.cpu().long()).values
    if len(chosen) != k:
        raise ValueError(f"{name} returned {len(chosen)} indices; expected {k}")
    if k and (chosen[0] < 0 or chosen[-1] >= n):
        raise ValueError(f"{name} returned indices outside [0, {n}): {chosen.min().item()}..{chosen.max().item()}")
    if k > 1 and not bool((chosen[1:] > chosen[:-1]).all()):
        raise ValueError(f"{name} returned repeated indices; expected {k} distinct ones")
    return chosen


def _synchronize(scores: Scores) -> None:
    """Wait for the scorer's GPU work, so its time is counted as scoring, not selecting."""
    t = scores.learner if scores.learner is not None else scores.reference
    if isinstance(t, Tensor) and t.is_cuda:
        torch.cuda.synchronize(t.device)


class Curation:
    """Scores a super-batch and keeps the sub-batch the selector draws.

    >>> c = Curation(lambda batch: batch[0], TopK(), None, "raise", LoaderStats())
    >>> c.select(torch.arange(4), (torch.tensor([3., 9., 1., 5.]),), 2, step=0, rng=Generators(0, 0, 0))
    ((tensor([9., 5.]),), tensor([1, 3]))
    """

    def __init__(self, scorer: Any, selector: Any, schedule: Any, nan: str, stats: LoaderStats,
                 score_transform: Optional[Callable[[Any], Any]] = None, score_autocast: Optional[torch.dtype] = None):
        self.scorer = scorer
        if score_transform is not None and not callable(score_transform):
            raise TypeError(f"score_transform must be callable (batch -> the view to score), got "
                            f"{type(score_transform).__name__}")
        if score_autocast is not None and not isinstance(score_autocast, torch.dtype):
            raise TypeError(f"score_autocast must be a torch.dtype such as torch.bfloat16, got {score_autocast!r}")
        self.score_transform, self.score_autocast = score_transform, score_autocast
        if selector is not None:
            check_component(selector, "selector", "JEST(), TopK() or Uniform()")
            check_signature(selector, "selector", "selector(scores, k, generator)", 3)
        if schedule is not None:
            check_component(schedule, "schedule", "Always(), Steps(start, end) or Early()", "active")
        if nan not in NAN_POLICIES:
            raise ValueError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
        self.selector: Callable = JEST() if selector is None else selector
        self.schedule: Schedule = Always() if schedule is None else schedule
        self.nan, self.stats = nan, stats

    @property
    def scorer(self) -> Any:
        """The user's scorer, as given."""
        return self._scorer

    @scorer.setter
    def scorer(self, scorer: Any) -> None:
        self._call = as_scorer(scorer)  # every scorer called one way: (batch, ids, generator)
        self._scorer = scorer

    def selecting(self, step: int) -> bool:
        return self.scorer is not None and self.schedule.active(step)

    def predictable(self) -> bool:
        """Whether `selecting(step)` is known ahead for every step (no schedule that learns from scores)."""
        return self.scorer is None or bool(getattr(self.schedule, "predictable", False))

    def select(self, ids: Any, batch: Any, k: int, step: int, rng: "Generators") -> tuple[Any, Tensor]:
        """The k rows of `batch` (n rows) that the selector draws on the scorer's scores, and their
        positions in the super-batch (sorted)."""
        n, stats = len(ids), self.stats
        t0 = time.perf_counter()
        view = batch if self.score_transform is None else self.score_transform(batch)
        with self._autocast():
            scores = as_scores(self._call(view, ids, rng.score), n)
        _synchronize(scores)
        t1 = time.perf_counter()
        stats.score_ms += 1e3 * (t1 - t0)
        finite = scores.finite()
        bad = int((~finite).sum())
        # every rank updates the schedule every step (Early all-reduces), on the finite rows only
        self.schedule.update(step, scores.index(torch.nonzero(finite).squeeze(1)) if bad else scores)
        if bad:
            stats.nan_scores += bad
            if self.nan == "raise":
                raise ValueError(
                    f"scorer returned NaN/inf scores for {bad} of {n} samples at step {step}; "
                    "pass nan='uniform' to fall back to a uniform draw for such super-batches"
                )
            stats.nan_batches += 1
            chosen = torch.sort(uniform(n, k, rng.select)).values
        else:
            chosen = check_indices(self.selector(scores, k, rng.select), n, k, self.selector)  # sorted
        sub = index_batch(batch, chosen)
        for name, value in scores.extras.items():
            sub = attach(sub, name, value[chosen.to(value.device)])
        stats.rejected += n - k
        stats.select_ms += 1e3 * (time.perf_counter() - t1)
        return sub, chosen

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Autocast on the scorer's device (a `Scorer`'s learner device, else the CPU) when asked for."""
        if self.score_autocast is None:
            return contextlib.nullcontext()
        device = self.scorer.device if isinstance(self.scorer, Scorer) else torch.device("cpu")
        return torch.autocast(device.type, dtype=self.score_autocast)

    def state_dict(self) -> dict:
        return {"schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state["schedule"])


class Generators:
    """An epoch's selection and scoring generators, seeded from (seed, rank, epoch); saved mid-epoch."""

    def __init__(self, seed: int, rank: int, epoch: int):
        self.select = torch.Generator().manual_seed(derive_seed(seed, rank, epoch, _SELECT))
        self.score = torch.Generator().manual_seed(derive_seed(seed, rank, epoch, _SCORE))

    def state_dict(self) -> dict:
        return {"select": self.select.get_state(), "score": self.score.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.select.set_state(state["select"])
        self.score.set_state(state["score"])
