"""Property checks for your own selectors, schedules, scorers and loaders: hypothesis strategies and checkers.

Each checker runs an object through the library's invariants on many generated cases and raises an
`AssertionError` naming the invariant that broke, on the smallest case hypothesis found::

    from curatedloader.testing import check_selector, check_schedule, check_scorer, check_loader
    check_selector(MySelector())      # indices in range, distinct, exactly k, long, determined by the generator
    check_schedule(MySchedule())      # state round-trips; same decisions after resume
    check_scorer(my_scorer, batch)    # shape, dtype, device, finite, no side effects, no autograd graph
    check_loader(CuratedLoader)       # exactly-once when off, sub-batch in super-batch, exact resume, ranks

Needs `hypothesis` (in the `dev` extra).
"""
from __future__ import annotations

import copy
import io
import math
import random
from collections import namedtuple
from collections.abc import Mapping
from typing import Any, Callable, Optional

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

from .batch import batch_len, index_batch
from .scores import Scorer, Scores, as_scores
from .selection import JEST, TopK, Uniform

__all__ = [
    "sizes", "score_tensors", "scores", "collate_structures", "datasets", "IdDataset",
    "check_selector", "check_schedule", "check_scorer", "check_loader",
]

# score values drawn often, so that ties are common
_TIED = (-2.0, -1.0, 0.0, 0.0, 0.5, 1.0, 1.0, 3.0)
_NONFINITE = (math.nan, math.inf, -math.inf)


def _settings(max_examples: int) -> settings:
    # derandomized: a checker passes or fails the same way on every run; one bug reported, the smallest
    # (no "explain" phase: it reruns the shrunk case many times to annotate it, which costs seconds)
    return settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                    report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


# ---- strategies -----------------------------------------------------------------------------------


@st.composite
def sizes(draw, max_super_batch: int = 64) -> tuple[int, int]:
    """(B, b): a super-batch size and a batch size, 1 <= b <= B <= max_super_batch.

    >>> from hypothesis import find
    >>> find(sizes(), lambda s: s[1] > 1)
    (2, 2)
    """
    B = draw(st.integers(1, max_super_batch))
    return B, draw(st.integers(1, B))


def score_tensors(n: int, *, nonfinite: bool = False) -> st.SearchStrategy[Tensor]:
    """Float32 score vectors of length n, with ties (values drawn from a small set) and, when
    `nonfinite`, NaN and ±inf."""
    values = st.sampled_from(_TIED) | st.floats(-1e4, 1e4, width=32)
    if nonfinite:
        values = values | st.sampled_from(_NONFINITE)
    return st.lists(values, min_size=n, max_size=n).map(lambda v: torch.tensor(v, dtype=torch.float32))


def scores(n: int, *, nonfinite: bool = False) -> st.SearchStrategy[Scores]:
    """`Scores` of n samples with learner and reference losses (ties; NaN/inf when `nonfinite`)."""
    t = score_tensors(n, nonfinite=nonfinite)
    return st.builds(lambda learner, reference: Scores(learner=learner, reference=reference), t, t)


_Pair = namedtuple("_Pair", ["x", "id"])
STRUCTURES = ("tensor", "tuple", "dict", "namedtuple", "nested")


def collate_structures() -> st.SearchStrategy[str]:
    """Names of sample structures `IdDataset` makes: a bare tensor, (x, id), a dict with a string per
    row, a namedtuple, nested dict/tuple."""
    return st.sampled_from(STRUCTURES)


class IdDataset(Dataset):
    """A map-style dataset of `n` samples of a given structure, each carrying its index, so that a check
    can read back which samples a collated batch holds (`ids(batch)`).

    >>> from torch.utils.data import default_collate
    >>> d = IdDataset(5, "dict"); d.ids(default_collate([d[3], d[1]]))
    [3, 1]
    """

    def __init__(self, n: int, structure: str = "tuple"):
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        self.n, self.structure = n, structure

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"IdDataset({self.n}, {self.structure!r})"

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.n:
            raise IndexError(i)
        x = torch.tensor([float(i), -float(i)])
        return {
            "tensor": x,
            "tuple": (x, i),
            "dict": {"x": x, "id": i, "name": f"sample-{i}"},
            "namedtuple": _Pair(x, i),
            "nested": {"inputs": (x, x[:1]), "meta": {"id": i}},
        }[self.structure]

    def ids(self, batch: Any) -> list[int]:
        """The sample indices of a collated batch, in order."""
        if self.structure == "tensor":
            t = batch
        elif self.structure == "nested":
            t = batch["meta"]["id"]
        elif self.structure == "dict":
            t = batch["id"]
        else:
            t = batch[1]
        return [int(v) for v in (t[:, 0] if self.structure == "tensor" else t).tolist()]


@st.composite
def datasets(draw, min_size: int = 1, max_size: int = 64) -> IdDataset:
    """`IdDataset`s of any size in [min_size, max_size] and any of the collate structures."""
    return IdDataset(draw(st.integers(min_size, max_size)), draw(collate_structures()))


# ---- helpers --------------------------------------------------------------------------------------


def _fail(invariant: str, detail: str, case: str) -> None:
    raise AssertionError(f"{invariant}: {detail}\n  case: {case}")


def _call(what: str, fn: Callable, case: str, *args: Any) -> Any:
    """Call user code; any exception becomes an AssertionError saying what raised, on which case."""
    try:
        return fn(*args)
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001 - a check reports every failure as a broken invariant
        _fail(f"{what} raised", f"{type(e).__name__}: {e}", case)


def _scramble_global_rngs(seed: int) -> None:
    """Put torch's (CPU), numpy's and Python's global generators in a state that depends on `seed`, so
    that code drawing from them (instead of the generator it was given) gives different results."""
    torch.default_generator.manual_seed(seed)  # torch.manual_seed would also seed every GPU: 10 ms
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _same(a: Any, b: Any) -> bool:
    """Structural equality of batches: tensors by value (and dtype), containers element-wise."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def _criterion(selector: Any) -> str:
    return getattr(selector, "criterion", "learnability")


def _scores_for(values: Tensor, criterion: str) -> Scores:
    """Scores whose `values(criterion)` are `values`."""
    zeros = torch.zeros_like(values)
    if criterion == "easy_reference":
        return Scores(learner=zeros, reference=-values)
    return Scores(learner=values, reference=zeros)


# ---- selectors ------------------------------------------------------------------------------------


def check_selector(selector: Callable, *, exact_topk: Optional[bool] = None,
                   softmax_temperature: Optional[float] = None, max_examples: int = 100,
                   max_super_batch: int = 64) -> None:
    """Check `selector(scores, k, generator) -> LongTensor[k]` on generated super-batches with ties:
    indices in range, no repeats, exactly k, long dtype, a 1-D tensor, and the same draw for the same
    generator seed whatever the global RNGs hold. `exact_topk`: the k highest scores are chosen (default:
    for `TopK`). `softmax_temperature`: one draw follows softmax(score / τ), checked by a chi-square test
    with a fixed seed and a tolerant bound (default: τ for `JEST`, ∞ (uniform) for `Uniform`).

    >>> check_selector(TopK())
    """
    if not callable(selector):
        raise TypeError(f"selector must be callable as selector(scores, k, generator), got {type(selector).__name__}")
    if exact_topk is None:
        exact_topk = isinstance(selector, TopK)
    if softmax_temperature is None:
        softmax_temperature = (selector.temperature if isinstance(selector, JEST)
                               else math.inf if isinstance(selector, Uniform) else None)
    criterion = _criterion(selector)

    @_settings(max_examples)
    @given(st.data())
    def one_draw(data) -> None:
        B, k = data.draw(sizes(max_super_batch), label="(B, k)")
        s = data.draw(scores(B), label="scores")
        seed = data.draw(st.integers(0, 2**32), label="seed")
        case = f"B={B}, k={k}, seed={seed}, learner={s.learner.tolist()}, reference={s.reference.tolist()}"
        _scramble_global_rngs(seed + 1)
        idx = _call("selector", selector, case, s, k, torch.Generator().manual_seed(seed))
        if not isinstance(idx, Tensor):
            _fail("returns a tensor", f"got {type(idx).__name__}", case)
        if idx.dtype != torch.long:
            _fail("long dtype", f"got {idx.dtype}", case)
        if idx.dim() != 1 or idx.numel() != k:
            _fail("exact count", f"expected shape ({k},), got {tuple(idx.shape)}", case)
        idx = idx.cpu()
        if k and (int(idx.min()) < 0 or int(idx.max()) >= B):
            _fail("indices in range", f"expected all in [0, {B}), got {idx.tolist()}", case)
        if idx.unique().numel() != k:
            _fail("no repeats", f"indices {idx.tolist()} repeat", case)
        _scramble_global_rngs(seed + 2)
        again = _call("selector", selector, case, s, k, torch.Generator().manual_seed(seed)).cpu()
        if not torch.equal(idx, again):
            _fail("determinism from the generator",
                  f"the same generator seed gave {idx.tolist()} then {again.tolist()} (global RNGs differed)", case)
        if exact_topk:
            values = s.values(criterion)
            chosen = torch.zeros(B, dtype=torch.bool)
            chosen[idx] = True
            if k < B and float(values[chosen].min()) < float(values[~chosen].max()):
                _fail("TopK exactness", f"chose {idx.tolist()} but a higher {criterion} score was left out", case)

    one_draw()
    if softmax_temperature is not None:
        _check_softmax_draw(selector, softmax_temperature, criterion)


def _check_softmax_draw(selector: Callable, temperature: float, criterion: str, draws: int = 4000,
                        bound: float = 30.0) -> None:
    """One-sample draws (k=1) from 5 scores follow softmax(score / τ): Pearson's chi-square over the 5
    outcomes (4 degrees of freedom; P(χ² > 30) ≈ 5e-6 for a correct selector) with a fixed seed."""
    tau = temperature if math.isfinite(temperature) else 1.0
    values = tau * torch.tensor([0.0, 1.0, -1.0, 0.5, 1.5])
    probs = torch.full((5,), 0.2, dtype=torch.float64) if math.isinf(temperature) else torch.softmax(
        values.double() / temperature, 0)
    s = _scores_for(values, criterion)
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(5, dtype=torch.float64)
    for _ in range(draws):
        counts[int(selector(s, 1, generator)[0])] += 1
    expected = draws * probs
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    if chi2 > bound:
        _fail("draw distribution", f"chi-square {chi2:.1f} > {bound} over {draws} one-sample draws: observed "
              f"{[round(c / draws, 3) for c in counts.tolist()]}, softmax(score / {temperature}) gives "
              f"{[round(p, 3) for p in probs.tolist()]}", f"{criterion} scores {values.tolist()}, k=1, seed 0")


# ---- schedules ------------------------------------------------------------------------------------


def _roundtrip(state: Any) -> Any:
    """`state` after torch.save / torch.load, as a checkpoint holds it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def check_schedule(schedule: Any, *, max_examples: int = 100, max_steps: int = 40) -> None:
    """Check a schedule (`active(step)`, `update(step, scores)`, `state_dict()`, `load_state_dict()`) on
    generated loss sequences, fed as the loader does (update after each active step): `active` returns a
    bool, the state survives torch.save/load and loads back to the same state, and a copy resumed from
    the state at any step makes the same decisions as the uninterrupted run.

    >>> from curatedloader import Early
    >>> check_schedule(Early())
    """
    for method in ("active", "update", "state_dict", "load_state_dict"):
        if not callable(getattr(schedule, method, None)):
            raise TypeError(f"schedule must have a {method}() method, got {type(schedule).__name__}")

    def run(s: Any, start: int, losses: list, case: str) -> list[bool]:
        decisions = []
        for step in range(start, len(losses)):
            on = _call("schedule.active", s.active, case, step)
            if not isinstance(on, (bool, np.bool_)):
                _fail("active returns a bool", f"active({step}) returned {on!r}", case)
            decisions.append(bool(on))
            if on:
                learner, reference = losses[step]
                _call("schedule.update", s.update, case, step,
                      Scores(learner=torch.full((4,), learner), reference=torch.full((4,), reference)))
        return decisions

    @_settings(max_examples)
    @given(st.data())
    def resume(data) -> None:
        loss = st.sampled_from((0.0, 0.5, 1.0, 2.0))
        losses = data.draw(st.lists(st.tuples(loss, loss), min_size=1, max_size=max_steps), label="losses")
        at = data.draw(st.integers(0, len(losses)), label="resume step")
        case = f"(learner, reference) mean losses per step {losses}, resumed at step {at}"
        whole = run(copy.deepcopy(schedule), 0, losses, case)
        first = copy.deepcopy(schedule)
        head = run(first, 0, losses[:at], case)
        state = _call("schedule.state_dict", first.state_dict, case)
        resumed = copy.deepcopy(schedule)
        _call("schedule.load_state_dict", resumed.load_state_dict, case, _roundtrip(state))
        if not _same(_call("schedule.state_dict", resumed.state_dict, case), state):
            _fail("state round-trip", f"saved {state!r}, loaded back as {resumed.state_dict()!r}", case)
        tail = run(resumed, at, losses, case)
        if head + tail != whole:
            _fail("same decisions after resume", f"uninterrupted {whole}, resumed {head} + {tail}", case)

    resume()


# ---- scorers --------------------------------------------------------------------------------------


def _snapshot(models: list[nn.Module]) -> list:
    return [(name, m.training, {k: v.detach().clone() for k, v in [*m.named_parameters(recurse=False),
                                                                    *m.named_buffers(recurse=False)]})
            for model in models for name, m in model.named_modules()]


def check_scorer(scorer: Callable, batch: Any, *, models: Optional[list[nn.Module]] = None,
                 device: Optional[torch.device | str] = None, max_examples: int = 20) -> None:
    """Check a scorer on `batch` and on generated row subsets of it, called as the loader calls it
    (`scorer(batch, ids)` for a `Scorer`, else `scorer(batch)`) but with autograd on and its models
    (`models`, default `scorer.models()`) in train mode: `Scores` or a float vector with one finite
    score per row, on one device (`device`, default `scorer.device` for a `Scorer`), no autograd graph,
    and model modes, parameters and buffers (BatchNorm statistics) as they were.

    >>> from curatedloader.scoring import CrossEntropyScorer
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    >>> check_scorer(CrossEntropyScorer(model, reference=copy.deepcopy(model)), (torch.randn(6, 3), torch.arange(6) % 2))
    """
    if not callable(scorer):
        raise TypeError(f"scorer must be callable on a batch, got {type(scorer).__name__}")
    n = batch_len(batch)
    if not n:
        raise ValueError(f"batch must hold at least one row, got {type(batch).__name__} of {n} rows")
    if models is None:
        models = scorer.models() if isinstance(scorer, Scorer) else []
    if device is None and isinstance(scorer, Scorer):
        device = scorer.device
    modes = [m.training for model in models for m in model.modules()]

    def one(rows: list[int]) -> None:
        case = f"rows {rows} of the batch"
        idx = torch.tensor(rows, dtype=torch.long)
        sub, ids = index_batch(batch, idx), idx
        for model in models:
            model.train()
        before = _snapshot(models)
        with torch.enable_grad():
            out = _call("scorer", lambda: scorer(sub, ids) if isinstance(scorer, Scorer) else scorer(sub), case)
        try:
            s = as_scores(out, len(rows))
        except ValueError as e:
            _fail("shape and dtype", str(e), case)
        tensors = s.tensors()
        for name, t in tensors.items():
            if t.requires_grad or t.grad_fn is not None:
                _fail("no autograd graph", f"{name} requires grad (grad_fn {t.grad_fn})", case)
        devices = {t.device for t in tensors.values()}
        if len(devices) > 1 or (device is not None and devices and devices != {torch.device(device)}):
            _fail("device", f"scores on {sorted(map(str, devices))}, expected {device or 'one device'}", case)
        if not bool(s.finite().all()):
            _fail("finite scores", f"non-finite scores: { {k: v.tolist() for k, v in tensors.items()} }", case)
        for (name, training, state), (_, training_after, state_after) in zip(before, _snapshot(models)):
            if training != training_after:
                _fail("model modes restored", f"module {name or '(root)'} left in "
                      f"{'train' if training_after else 'eval'} mode", case)
            for key, value in state.items():
                if not _same(value, state_after[key]):
                    kind = "BatchNorm statistics" if "running" in key or "batches_tracked" in key else "parameters and buffers"
                    _fail(f"{kind} unchanged", f"{name or '(root)'}.{key} changed", case)

    try:
        @_settings(max_examples)
        @given(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
        def subsets(mask: list[bool]) -> None:  # a row mask shrinks to the fewest rows
            one([i for i, keep in enumerate(mask) if keep])

        subsets()  # first, so that a failure is shrunk to the fewest rows
        one(list(range(n)))
    finally:
        for m, training in zip((m for model in models for m in model.modules()), modes):
            m.training = training


# ---- loaders --------------------------------------------------------------------------------------


class _IdScores:
    """A scorer for loader checks: deterministic, tied scores from the sample ids (some negative, so
    `Early` can switch), recording which ids each super-batch held."""

    def __init__(self, dataset: IdDataset):
        self.dataset, self.calls = dataset, []

    def __call__(self, batch: Any) -> Tensor:
        ids = self.dataset.ids(batch)
        self.calls.append(ids)
        return torch.tensor([float((i * 7919) % 13 - 6) for i in ids])


def check_loader(make_loader: Callable[..., Any], *, selector: Optional[Callable] = None,
                 schedule: Optional[Any] = None, max_examples: int = 25, max_size: int = 40) -> None:
    """Check a loader factory `make_loader(dataset, batch_size, **kwargs)` (e.g. `CuratedLoader`, or a
    function wrapping it) with kwargs among `super_batch_size`, `scorer`, `selector`, `schedule`, `seed`,
    `shuffle`, `sampler`, on generated datasets, structures, sizes and seeds: with `scorer=None` every
    sample comes exactly once in batches of `batch_size` and `len()` counts them; with selection (and a
    schedule without state, whose decisions `len()` can foresee) `len()` counts them too, and each
    batch is a subset, without repeats, of one scored super-batch, and the super-batches and plain batches
    hold every sample exactly once; `load_state_dict(state_dict())` taken at any step of two epochs resumes
    to the batches of the uninterrupted run; and with a `DistributedSampler`, every rank gets as many batches
    (for a schedule without state: `Early` agrees across ranks through torch.distributed, not run here).
    `selector` and `schedule` (copied per loader) are those used while selecting (default JEST, Always).

    >>> from curatedloader import CuratedLoader
    >>> check_loader(CuratedLoader, max_examples=3)
    """
    if not callable(make_loader):
        raise TypeError(f"make_loader must be callable as make_loader(dataset, batch_size, **kwargs), "
                        f"got {type(make_loader).__name__}")

    # a schedule with state (Early) decides as it goes, so len() can only assume it stays as it is now
    stateless = schedule is None or not schedule.state_dict()

    def selecting(dataset: IdDataset, b: int, B: int, seed: int, **kw: Any) -> tuple[Any, _IdScores]:
        scorer = _IdScores(dataset)
        kw.setdefault("shuffle", None if "sampler" in kw else True)
        loader = make_loader(dataset, b, super_batch_size=B, scorer=scorer, seed=seed,
                             selector=copy.deepcopy(selector) if selector is not None else JEST(),
                             schedule=copy.deepcopy(schedule), **kw)
        return loader, scorer

    @_settings(max_examples)
    @given(st.data())
    def invariants(data) -> None:
        dataset = data.draw(datasets(1, max_size), label="dataset")
        n = len(dataset)
        B, b = data.draw(sizes(n), label="(B, b)")
        seed = data.draw(st.integers(0, 2**16), label="seed")
        case = f"{n} samples ({dataset.structure}), batch_size={b}, super_batch_size={B}, seed={seed}"

        plain = make_loader(dataset, b, seed=seed, shuffle=True)
        expected_len = _call("len(loader)", len, case, plain)
        batches = _call("iteration", list, case, plain)
        ids = [i for batch in batches for i in dataset.ids(batch)]
        if sorted(ids) != list(range(n)):
            _fail("exactly once when off", f"one epoch yielded ids {ids}", case)
        if any(batch_len(x) != b for x in batches[:-1]) or batch_len(batches[-1]) > b:
            _fail("batch size when off", f"batch sizes {[batch_len(x) for x in batches]}", case)
        if expected_len != len(batches):
            _fail("len() counts the batches", f"len() was {expected_len}, the epoch had {len(batches)}", case)

        loader, scorer = selecting(dataset, b, B, seed)
        expected_len = _call("len(loader)", len, case, loader)
        whole = _call("iteration", list, case, loader)
        supers = {i: j for j, ids in enumerate(scorer.calls) for i in ids}
        seen = [i for ids in scorer.calls for i in ids]
        for step, batch in enumerate(whole):
            ids = dataset.ids(batch)
            if len(set(ids)) != len(ids):
                _fail("no repeats in a batch", f"step {step} yielded ids {ids}", case)
            owners = {supers.get(i) for i in ids}
            if owners == {None}:
                seen += ids  # a plain batch (schedule off)
            elif len(owners) != 1 or None in owners:
                _fail("sub-batch within its super-batch", f"step {step} yielded ids {ids}, scored super-batches "
                      f"were {scorer.calls}", case)
        if sorted(seen) != list(range(n)):
            _fail("one pass over the data", f"super-batches {scorer.calls} and plain batches cover {sorted(seen)}", case)
        if stateless and expected_len != len(whole):
            _fail("len() counts the batches", f"len() was {expected_len}, the epoch had {len(whole)}", case)

        # resume over two epochs, so that a state saved at an epoch's end resumes too
        second = _call("iteration of a second epoch", list, case, loader)
        epochs = [whole, second]
        run_ = whole + second
        at = data.draw(st.integers(0, len(run_)), label="resume step")
        first, _ = selecting(dataset, b, B, seed)
        state, epoch = (first.state_dict(), 0) if at == 0 else (None, None)
        step = 0
        for e in range(2):
            for _batch in first:
                step += 1
                if step == at:
                    state, epoch = first.state_dict(), e
                    break
            if state is not None:
                break
        resumed, _ = selecting(dataset, b, B, seed)
        _call("load_state_dict", resumed.load_state_dict, case, _roundtrip(state))
        rest = []
        for _ in range(epoch, len(epochs)):  # the rest of the saved epoch, then the later ones
            rest += _call("iteration after load_state_dict", list, case, resumed)
        if len(rest) != len(run_) - at or not all(_same(x, y) for x, y in zip(rest, run_[at:])):
            _fail("resume equals the uninterrupted run", f"resumed at step {at} of two epochs of {len(whole)} and "
                  f"{len(second)} batches: ids {[dataset.ids(x) for x in rest]}, uninterrupted "
                  f"{[dataset.ids(x) for x in run_[at:]]}", case)

        if not stateless:  # ranks agree on Early's switch through an all-reduce, which needs torch.distributed
            return
        world = data.draw(st.integers(2, 3), label="ranks")
        counts = []
        for rank in range(world):
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
            counts.append(len(_call("iteration", list, case, selecting(dataset, b, B, seed, sampler=sampler)[0])))
        if len(set(counts)) != 1:
            _fail("equal batches per rank", f"{world} ranks yielded {counts} batches", f"{case}, {world} ranks")

    invariants()
