"""curatedloader.testing: every built-in passes the checkers, planted bad objects are caught."""
import doctest
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import find, given
from torch import nn
from torch.utils.data import default_collate

from curatedloader import JEST, Always, CuratedLoader, Early, Schedule, Scores, Selector, Steps, TopK, Uniform
from curatedloader import testing
from curatedloader.scoring import CrossEntropyScorer, DiffusionScorer
from curatedloader.testing import check_loader, check_schedule, check_scorer, check_selector


def test_docstring_examples():
    result = doctest.testmod(testing)
    assert result.attempted > 0 and result.failed == 0


# ---- strategies ---------------------------------------------------------------------------------


@given(testing.sizes(16))
def test_sizes_are_ordered(size):
    B, b = size
    assert 1 <= b <= B <= 16


def test_score_tensors_hold_ties_and_nonfinite_values():
    tied = find(testing.score_tensors(4), lambda t: t.unique().numel() < 4)
    assert tied.dtype == torch.float32 and tied.shape == (4,)
    for bad in (math.isnan, lambda v: v == math.inf, lambda v: v == -math.inf):
        find(testing.score_tensors(3, nonfinite=True), lambda t, bad=bad: any(bad(v) for v in t.tolist()))


@given(testing.datasets(1, 12))
def test_id_datasets_read_back_their_ids_after_collation(dataset):
    order = list(range(len(dataset)))[::-1]
    assert dataset.ids(default_collate([dataset[i] for i in order])) == order


def test_every_structure_is_drawn():
    for structure in testing.STRUCTURES:
        find(testing.datasets(), lambda d, s=structure: d.structure == s)


# ---- selectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("selector", [JEST(), JEST(temperature=0.25, criterion="hard_learner"), TopK(),
                                      TopK(criterion="easy_reference"), Uniform()], ids=repr)
def test_builtin_selectors_pass(selector):
    check_selector(selector, max_examples=50)


class Repeats(Selector):
    def __call__(self, scores, k, generator):
        idx = torch.randperm(len(scores), generator=generator)[:k]
        idx[-1] = idx[0]
        return idx


class IgnoresGenerator(Selector):
    def __call__(self, scores, k, generator):
        return torch.randperm(len(scores))[:k]


class Int32(Selector):
    def __call__(self, scores, k, generator):
        return torch.randperm(len(scores), generator=generator)[:k].int()


class OneShort(Selector):
    def __call__(self, scores, k, generator):
        return torch.randperm(len(scores), generator=generator)[: max(0, k - 1)]


class BottomK(TopK):  # claims TopK's exactness by being one
    def __call__(self, scores, k, generator):
        return torch.topk(-scores.values(self.criterion), k).indices


class TooSharp(JEST):  # draws from softmax(2 · score / τ)
    def __call__(self, scores, k, generator):
        return super().__call__(Scores(2 * scores.learner, 2 * scores.reference), k, generator)


@pytest.mark.parametrize("selector, invariant", [
    (Repeats(), "no repeats"), (IgnoresGenerator(), "determinism from the generator"), (Int32(), "long dtype"),
    (OneShort(), "exact count"), (BottomK(), "TopK exactness"), (TooSharp(), "draw distribution"),
])
def test_bad_selectors_are_caught(selector, invariant):
    with pytest.raises(AssertionError, match=invariant) as info:
        check_selector(selector, max_examples=50, max_super_batch=16)  # small cases shrink fast
    assert "case:" in str(info.value)


def test_smallest_counterexample_is_reported():
    with pytest.raises(AssertionError, match=r"no repeats: indices \[\d, \d\] repeat\n  case: B=2, k=2, seed=0"):
        check_selector(Repeats(), max_super_batch=16)


def test_exactness_and_distribution_only_where_claimed():
    check_selector(BottomK(), exact_topk=False, max_examples=20)  # then only the basic invariants
    with pytest.raises(AssertionError, match="TopK exactness"):
        check_selector(Uniform(), exact_topk=True, softmax_temperature=None, max_examples=20, max_super_batch=16)
    with pytest.raises(AssertionError, match="draw distribution"):
        check_selector(TopK(), softmax_temperature=1.0, max_examples=5)


# ---- schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [Always(), Steps(0, 3), Steps(2), Early()], ids=repr)
def test_builtin_schedules_pass(schedule):
    check_schedule(schedule)


class ForgetsState(Early):
    def state_dict(self):
        return {"stopped_at": None}


class IgnoresLoad(Early):
    def load_state_dict(self, state):
        pass


class Flaky(Schedule):
    def active(self, step):
        return step % 2  # an int, not a bool


@pytest.mark.parametrize("schedule, invariant", [
    (ForgetsState(), "same decisions after resume"), (IgnoresLoad(), "state round-trip"),
    (Flaky(), "active returns a bool"),
])
def test_bad_schedules_are_caught(schedule, invariant):
    with pytest.raises(AssertionError, match=invariant):
        check_schedule(schedule)


# ---- scorers ------------------------------------------------------------------------------------


def classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 4))


BATCH = (torch.randn(10, 3, generator=torch.Generator().manual_seed(0)), torch.arange(10) % 4)


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))

    def forward(self, x, sigma):
        return self.net(torch.cat([x, sigma.log()[:, None]], 1))


@pytest.mark.parametrize("make", [
    lambda: CrossEntropyScorer(classifier(), reference=classifier()),
    lambda: CrossEntropyScorer(classifier(), reference_losses=torch.rand(10)),
    lambda: DiffusionScorer(Denoiser(), Denoiser(), return_noise=True),
], ids=["ce-reference", "ce-table", "diffusion"])
def test_builtin_scorers_pass(make):
    scorer = make()
    batch = BATCH if isinstance(scorer, CrossEntropyScorer) else (torch.randn(10, 2),)
    check_scorer(scorer, batch)
    assert all(m.training for model in scorer.models() for m in model.modules())  # modes as they were


def test_plain_function_scorer_passes():
    model = classifier()

    @torch.no_grad()
    def confidence(batch):
        was = model.training
        model.eval()
        out = model(batch[0]).softmax(1).max(1).values
        model.train(was)
        return out

    check_scorer(confidence, BATCH, models=[model])


def _bad_scorers():
    model = classifier()

    def leaves_eval(batch):
        model.eval()
        return model(batch[0]).detach()[:, 0]

    def builds_graph(batch):
        was = model.training
        model.eval()
        out = model(batch[0])[:, 0]
        model.train(was)
        return out

    @torch.no_grad()
    def updates_batchnorm(batch):
        x = batch[0].repeat(2, 1)  # two rows at least: BatchNorm in train mode needs them
        return model(x)[: len(batch[0]), 0]  # train mode: BatchNorm updates its running statistics

    def non_finite(batch):
        out = torch.zeros(len(batch[0]))
        out[-1] = math.inf
        return out

    def trains(batch):
        with torch.no_grad():
            model[-1].bias.add_(1.0)
        return torch.zeros(len(batch[0]))

    return model, [(leaves_eval, "model modes restored"), (builds_graph, "no autograd graph"),
                   (updates_batchnorm, "BatchNorm statistics unchanged"), (non_finite, "finite scores"),
                   (trains, "parameters and buffers unchanged"),
                   (lambda batch: torch.zeros(len(batch[0]) + 1), "shape and dtype"),
                   (lambda batch: torch.zeros(len(batch[0]), dtype=torch.long), "shape and dtype")]


@pytest.mark.parametrize("index", range(7))
def test_bad_scorers_are_caught(index):
    model, cases = _bad_scorers()
    scorer, invariant = cases[index]
    with pytest.raises(AssertionError, match=invariant):
        check_scorer(scorer, BATCH, models=[model])
    assert model.training  # the checker put the model back as it found it


def test_non_finite_score_is_shrunk_to_one_row():
    def nan_for_row_3(batch):
        return torch.where(batch[1] == 3, math.nan, 0.0)

    with pytest.raises(AssertionError, match=r"finite scores: .*\n  case: rows \[3\] of the batch"):
        check_scorer(nan_for_row_3, (torch.zeros(6, 1), torch.arange(6)))


def test_scorer_on_another_device_is_caught():
    def split(batch):
        n = len(batch[0])
        return Scores(learner=torch.zeros(n), reference=torch.zeros(n, device="meta"))

    with pytest.raises(AssertionError, match="device"):
        check_scorer(split, BATCH)
    with pytest.raises(AssertionError, match="device"):
        check_scorer(lambda batch: torch.zeros(len(batch[0])), BATCH, device="meta")


# ---- loaders ------------------------------------------------------------------------------------


@pytest.mark.parametrize("selector, schedule", [(None, None), (TopK(), Steps(1, 3)), (Uniform(), Early())],
                         ids=["jest", "topk-steps", "uniform-early"])
def test_curated_loader_passes(selector, schedule):
    check_loader(CuratedLoader, selector=selector, schedule=schedule, max_examples=15)


def test_loader_with_a_bad_selector_is_caught():
    with pytest.raises(AssertionError, match="no repeats in a batch|raised"):
        check_loader(CuratedLoader, selector=Repeats(), max_examples=15, max_size=12)


def test_loader_that_does_not_resume_is_caught():
    def forgetful(dataset, batch_size, **kw):
        loader = CuratedLoader(dataset, batch_size, **kw)
        loader.load_state_dict = lambda state: None
        return loader

    with pytest.raises(AssertionError, match="resume equals the uninterrupted run"):
        check_loader(forgetful, max_examples=15, max_size=12)


def test_loader_that_repeats_samples_is_caught():
    def twice(dataset, batch_size, **kw):
        return CuratedLoader(torch.utils.data.ConcatDataset([dataset, dataset]), batch_size, **kw)

    with pytest.raises(AssertionError, match="exactly once when off"):
        check_loader(twice, max_examples=15, max_size=12)


@pytest.mark.parametrize("call, error", [
    (lambda: check_selector(3), TypeError), (lambda: check_schedule(object()), TypeError),
    (lambda: check_scorer(42, BATCH), TypeError), (lambda: check_scorer(lambda b: b, []), ValueError),
    (lambda: check_loader("CuratedLoader"), TypeError), (lambda: testing.IdDataset(3, "list"), ValueError),
])
def test_bad_arguments(call, error):
    with pytest.raises(error):
        call()


def test_readme_example_runs_and_prints_what_readme_shows(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Check your own selector"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == shown
