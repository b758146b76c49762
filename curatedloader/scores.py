"""What a scorer returns, and the base class the built-in scorers share."""
from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

CRITERIA = ("learnability", "hard_learner", "easy_reference")


@dataclass
class Scores:
    """Per-sample losses of a super-batch of B samples.

    >>> s = Scores(learner=torch.tensor([2.0, 1.0]), reference=torch.tensor([0.5, 0.9]))
    >>> s.values("learnability")
    tensor([1.5000, 0.1000])
    """

    learner: Optional[Tensor] = None
    reference: Optional[Tensor] = None
    # per-row tensors the loader attaches to the sub-batch under these names (e.g. diffusion noise)
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        t = self.learner if self.learner is not None else self.reference
        return 0 if t is None else t.shape[0]

    def values(self, criterion: str = "learnability") -> Tensor:
        """The per-sample score for `criterion`; higher means more worth training on."""
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if criterion != "easy_reference" and self.learner is None:
            raise ValueError(f"criterion {criterion!r} needs learner losses; the scorer returned none")
        if criterion != "hard_learner" and self.reference is None:
            raise ValueError(
                f"criterion {criterion!r} needs reference losses; give the scorer a reference model "
                "or reference_losses, or use criterion='hard_learner'"
            )
        if criterion == "learnability":
            return self.learner.float() - self.reference.float()
        if criterion == "hard_learner":
            return self.learner.float()
        return -self.reference.float()

    def tensors(self) -> dict[str, Tensor]:
        """Every per-row tensor, extras included, by name."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extras"}
        out.update(self.extras)
        return {k: v for k, v in out.items() if isinstance(v, Tensor) and v.dim() >= 1}

    def index(self, idx: Tensor) -> "Scores":
        """The scores of rows `idx`, in that order."""
        taken = {f.name: _take(getattr(self, f.name), idx) for f in fields(self) if f.name != "extras"}
        return replace(self, **taken, extras={k: _take(v, idx) for k, v in self.extras.items()})

    def finite(self) -> Tensor:
        """Bool mask [B]: True where every per-row tensor of that row is finite."""
        ok = None  # combined where the scores live: one device-to-host copy per step, not one per tensor
        for t in self.tensors().values():
            if t.is_floating_point():
                row_ok = torch.isfinite(t).reshape(t.shape[0], -1).all(1)
                ok = row_ok if ok is None else ok & row_ok.to(ok.device)
        return torch.ones(len(self), dtype=torch.bool) if ok is None else ok.cpu()

    def check(self, n: int, name: str = "scorer") -> "Scores":
        """Raise a ValueError naming `name` unless every tensor is a float vector of length n."""
        if len(self) != n:
            raise ValueError(f"{name} returned scores for {len(self)} samples; expected {n}")
        for key, t in self.tensors().items():
            if t.shape[0] != n:
                raise ValueError(f"{name} returned {key} of shape {tuple(t.shape)}; expected {n} rows")
            if key not in self.extras and not t.is_floating_point():
                raise ValueError(f"{name} returned {key} of dtype {t.dtype}; expected a float tensor")
        if self.learner is not None and self.learner.dim() != 1:
            raise ValueError(f"{name} returned learner losses of shape {tuple(self.learner.shape)}; expected ({n},)")
        if self.reference is not None and self.reference.dim() != 1:
            raise ValueError(f"{name} returned reference losses of shape {tuple(self.reference.shape)}; expected ({n},)")
        return self

    def mean_losses(self) -> tuple[float, float]:
        """(mean learner loss, mean reference loss), NaN where missing; used by `Early`."""
        mean = lambda t: float("nan") if t is None else float(t.float().nanmean())  # noqa: E731
        return mean(self.learner), mean(self.reference)


def _take(t, idx: Tensor):
    if isinstance(t, Tensor) and t.dim() >= 1:
        return t[idx.to(t.device)]
    return t


def _check_device(tensors) -> None:
    for t in tensors:
        if t.device.type == "meta":
            raise ValueError("scorer returned a tensor on the meta device (no data); expected scores on the CPU "
                             "or the model's device")


def as_scores(out, n: int) -> Scores:
    """Normalise a scorer's output (`Scores` or a `Tensor[n]`) and check its shape and dtype."""
    if isinstance(out, Tensor):
        if out.dim() != 1 or out.shape[0] != n:
            raise ValueError(f"scorer returned a tensor of shape {tuple(out.shape)}; expected ({n},)")
        if not out.is_floating_point():
            raise ValueError(f"scorer returned a tensor of dtype {out.dtype}; expected a float tensor")
        _check_device([out])
        # a plain score is "higher is better": it plays the learner loss under criterion hard_learner
        return Scores(learner=out, reference=torch.zeros_like(out))
    if isinstance(out, Scores):
        out.check(n)
        _check_device(out.tensors().values())
        return out
    raise ValueError(f"scorer must return Scores or a Tensor of shape ({n},), got {type(out).__name__}")


class Scorer:
    """Base of the built-in scorers: `scorer(batch, ids) -> Scores`.

    Subclasses implement `models()` and `score(batch, ids, generator)`; calling the scorer runs it under
    `torch.inference_mode()` with every model switched to eval mode and restored afterwards.
    `generator` is the source of the scorer's randomness (noise draws) for this call: `CuratedLoader`
    passes its own, seeded from its seed and kept in its `state_dict()`; None means torch's global one.
    """

    def models(self) -> list[nn.Module]:
        return []

    def score(self, batch, ids, generator: Optional[torch.Generator] = None) -> Scores:
        raise NotImplementedError

    def __call__(self, batch, ids=None, generator: Optional[torch.Generator] = None) -> Scores:
        with self.eval_mode(), torch.inference_mode():
            if _takes_generator(type(self).score):
                return self.score(batch, ids, generator)
            return self.score(batch, ids)  # a subclass written as score(batch, ids)

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        modules = [m for model in self.models() for m in model.modules()]
        was_training = [m.training for m in modules]
        for m in modules:
            m.training = False
        try:
            yield
        finally:
            for m, t in zip(modules, was_training):
                m.training = t

    @property
    def device(self) -> torch.device:
        """The learner's device (the first model's): where scores are computed."""
        return next((model_device(m) for m in self.models()), torch.device("cpu"))


@functools.lru_cache(maxsize=None)
def _takes_generator(score: Callable) -> bool:
    params = inspect.signature(score).parameters
    return "generator" in params or any(p.kind is p.VAR_POSITIONAL for p in params.values())


def model_device(model, default: torch.device = torch.device("cpu")) -> torch.device:
    """The device of a model's first parameter (`default` for a model without parameters)."""
    return next((p.device for p in model.parameters()), default) if isinstance(model, nn.Module) else default
