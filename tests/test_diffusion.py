"""DiffusionScorer and the Early schedule."""
import copy
import math
import os
import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from curatedloader import JEST, CuratedLoader, Early, Scores
from curatedloader.scoring import DiffusionScorer
from curatedloader.scoring.diffusion import add_noise, edm_weight


class Denoiser(nn.Module):
    """A tiny EDM-style denoiser for any [B, ...] input; records what it was called with."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.scale = nn.Parameter(torch.randn((), generator=torch.Generator().manual_seed(seed)))
        self.calls, self.modes = [], []

    def forward(self, noisy, sigma):
        self.calls.append((noisy.clone(), sigma.clone()))
        self.modes.append(self.training)
        s = sigma.reshape(-1, *[1] * (noisy.dim() - 1))
        return noisy / (1 + s**2) + self.scale * torch.tanh(noisy) * s


def scorer(**kw):
    return DiffusionScorer(Denoiser(0), Denoiser(1), **kw)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), b=st.integers(1, 9), seed=st.integers(0, 99))
def test_identical_learner_and_reference_give_zero_learnability(shape, b, seed):
    x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))
    model = Denoiser(seed)
    for reference in (model, copy.deepcopy(model)):
        scores = DiffusionScorer(model, reference)((x,))
        assert torch.equal(scores.values("learnability"), torch.zeros(b))
        assert (scores.learner > 0).all()


def test_learner_and_reference_see_the_same_noisy_inputs_and_loss_follows_edm():
    s = scorer(sigma_data=0.7, return_noise=True)
    x = torch.randn(64, 3, 4)
    scores = s((x,))
    (noisy_l, sigma_l), = s.learner.calls
    (noisy_r, sigma_r), = s.reference.calls
    assert torch.equal(noisy_l, noisy_r) and torch.equal(sigma_l, sigma_r)
    sigma, eps = scores.extras["sigma"], scores.extras["noise"]
    assert torch.equal(sigma, sigma_l) and sigma.shape == (64,) and eps.shape == x.shape
    assert torch.equal(noisy_l, add_noise(x, sigma, eps))
    with torch.inference_mode():
        expected = edm_weight(sigma, 0.7) * ((s.learner(noisy_l, sigma) - x) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(scores.learner, expected)


def test_noise_levels_follow_p_mean_and_p_std():
    s = scorer(p_mean=-2.0, p_std=0.5, return_noise=True)
    log_sigma = s((torch.zeros(20000, 1),)).extras["sigma"].log()
    assert abs(float(log_sigma.mean()) + 2.0) < 0.02 and abs(float(log_sigma.std()) - 0.5) < 0.02


def test_input_key_and_eval_mode_only_while_scoring():
    s = scorer(input_key="image")
    s.learner.train(), s.reference.eval()
    scores = s({"image": torch.randn(8, 2), "label": torch.zeros(8)})
    assert len(scores) == 8 and s.learner.modes == s.reference.modes == [False]
    assert s.learner.training and not s.reference.training


def _loader(seed=0, **kw):
    data = torch.utils.data.TensorDataset(torch.randn(200, 2, generator=torch.Generator().manual_seed(5)))
    return CuratedLoader(data, batch_size=10, filter_ratio=0.5, scorer=scorer(return_noise=True, **kw),
                         seed=seed, shuffle=True)


def test_loader_attaches_sigma_and_noise_of_the_chosen_rows():
    loader = _loader()
    x, sigma, noise = next(iter(loader))
    assert x.shape == noise.shape == (10, 2) and sigma.shape == (10,)
    assert not (sigma.is_inference() or noise.is_inference())  # usable in the training step's autograd
    noisy, all_sigma = loader.scorer.learner.calls[0]
    rows = [int(torch.nonzero((noisy == row).all(1))[0]) for row in add_noise(x, sigma, noise)]
    assert torch.equal(all_sigma[rows], sigma)


def test_noise_flows_from_the_loader_seed():
    first = lambda seed: next(iter(_loader(seed)))[1]  # noqa: E731
    assert torch.equal(first(0), first(0)) and not torch.equal(first(0), first(1))


class WrongShape(nn.Module):
    def forward(self, noisy, sigma):
        return noisy[:, :1]


@pytest.mark.parametrize("which", ["learner", "reference"])
def test_model_returning_wrong_shape_is_rejected(which):
    models = {"learner": Denoiser(0), "reference": Denoiser(1), which: WrongShape()}
    with pytest.raises(ValueError, match=rf"{which} returned \(4, 1\); expected .* \(4, 2\)"):
        DiffusionScorer(**models)((torch.randn(4, 2),))


@pytest.mark.parametrize("kw, match", [
    (dict(sigma_data=0.0), "sigma_data must be a positive number"),
    (dict(sigma_data=-1.0), "sigma_data must be a positive number"),
    (dict(sigma_data=math.nan), "sigma_data must be a positive number"),
    (dict(p_std=-0.1), "p_std must be a non-negative number"),
    (dict(p_mean=math.inf), "p_mean must be a finite number"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        scorer(**kw)


def test_bad_inputs():
    with pytest.raises(ValueError, match="reference must be a denoiser"):
        DiffusionScorer(Denoiser(), "ema")
    with pytest.raises(ValueError, match="batch field 0 must be a float tensor"):
        scorer()((torch.zeros(4, 2, dtype=torch.long),))
    with pytest.raises(ValueError, match="batch has no field 'image'"):
        scorer(input_key="image")((torch.zeros(4, 2),))


# ---- Early ------------------------------------------------------------------------------------------


def mean_scores(learner_mean, reference_mean=1.0, n=4):
    return Scores(learner=torch.full((n,), learner_mean), reference=torch.full((n,), reference_mean))


def test_early_switches_exactly_once_at_the_first_step_the_learner_is_better():
    e = Early()
    means = [3.0, 2.0, 1.0, 1.5, 0.9, 2.0, 0.5]  # first below 1.0 at step 4; later steps must not matter
    history = []
    for step, m in enumerate(means):
        history.append(e.active(step))
        if e.active(step):
            e.update(step, mean_scores(m))
    assert history == [True] * 5 + [False] * 2
    assert e.stopped_at == 4 and e.active(4) and not any(e.active(s) for s in range(5, 1000))
    e.update(10, mean_scores(0.1))  # updates after the switch change nothing
    assert e.stopped_at == 4


def test_early_needs_both_losses():
    with pytest.raises(ValueError, match="Early needs learner and reference losses"):
        Early().update(0, Scores(learner=torch.ones(3)))


def test_early_in_the_loader_and_resume_keeps_its_state():
    data = torch.utils.data.TensorDataset(torch.arange(400.0))
    calls = []

    def falling(batch):  # learner loss 2.0, 1.5, 1.0, 0.5, ... against a reference at 1.2
        calls.append(len(batch[0]))
        return mean_scores(2.0 - 0.5 * (len(calls) - 1), 1.2, n=len(batch[0]))

    def make():
        return CuratedLoader(data, batch_size=10, super_batch_size=40, scorer=falling, selector=JEST(),
                             schedule=Early(), seed=3, shuffle=True)

    loader = make()
    it = iter(loader)
    for _ in range(3):
        next(it)
    assert loader.schedule.stopped_at == 2 and calls == [40, 40, 40]
    state = loader.state_dict()
    rest = [b[0] for b in it]
    assert calls == [40, 40, 40] and all(len(b) == 10 for b in rest)  # no scoring after the switch

    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.schedule.stopped_at == 2 and not resumed.schedule.active(3)
    again = [b[0] for b in resumed]
    assert calls == [40, 40, 40] and len(again) == len(rest)
    assert all(torch.equal(a, b) for a, b in zip(again, rest))


def _early_on_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    e = Early()
    # rank 0 alone would switch at step 0, rank 1 alone never; the averages cross below at step 2
    learner = [[0.5, 0.5, 0.5], [3.0, 2.0, 1.0]][rank]
    for step, m in enumerate(learner):
        e.update(step, mean_scores(m, 1.0))
    torch.save(e.stopped_at, os.path.join(out_dir, f"{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_early_switches_on_every_rank_together():
    with tempfile.TemporaryDirectory() as d:
        torch.multiprocessing.spawn(_early_on_rank, args=(2, os.path.join(d, "init"), d), nprocs=2)
        assert [torch.load(os.path.join(d, f"{r}.pt")) for r in range(2)] == [2, 2]


def test_a_dataset_of_bare_images_is_scored_whole():
    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            return torch.full((3, 2, 2), float(i))

    loader = CuratedLoader(Images(), batch_size=2, super_batch_size=6, scorer=scorer())
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(2, 3, 2, 2)] * 2 and loader.stats.rejected == 8
