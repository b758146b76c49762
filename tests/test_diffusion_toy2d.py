"""The pieces of benchmarks/toy2d.py: exact density, sampler, metrics, and a tiny end-to-end run."""
import importlib.util
import sys
from pathlib import Path

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

spec = importlib.util.spec_from_file_location("toy2d", Path(__file__).parents[1] / "benchmarks" / "toy2d.py")
toy2d = sys.modules["toy2d"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy2d)


def test_tree_mixture_log_prob_is_exact():
    p = toy2d.TreeMixture(depth=3, per_branch=2)
    exact = MixtureSameFamily(Categorical(probs=p.weight), MultivariateNormal(p.mu, p.cov))
    x = torch.cat([p.sample(200, torch.Generator().manual_seed(0)), torch.randn(50, 2)])
    torch.testing.assert_close(p.log_prob(x, chunk=64), exact.log_prob(x.double()), rtol=1e-5, atol=1e-6)


def test_heun_sampler_with_the_exact_denoiser_recovers_a_gaussian():
    s0 = 0.3  # for N(0, s0²) the ideal denoiser is x·s0² / (s0² + σ²)
    denoise = lambda x, sigma: x * s0**2 / (s0**2 + sigma[:, None] ** 2)  # noqa: E731
    x = toy2d.heun_sample(denoise, 5.0 * torch.randn(5000, 2, generator=torch.Generator().manual_seed(0)), 32)
    assert abs(float(x.std()) - s0) < 0.015


def test_sliced_wasserstein_sees_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, 2, generator=g), torch.randn(4000, 2, generator=g)
    same = toy2d.sliced_wasserstein(a, b, torch.Generator().manual_seed(1))
    shifted = toy2d.sliced_wasserstein(a, b + torch.tensor([0.5, 0.0]), torch.Generator().manual_seed(1))
    assert same < 0.05 < 0.2 < shifted


def test_tiny_run_end_to_end():
    cfg = toy2d.Config(seeds=2, steps=6, ref_steps=3, batch_size=8, evals=2, eval_samples=64, sampler_steps=4,
                       guidance=(1.0, 2.0), data_size=512)
    out = toy2d.run(cfg)
    text = toy2d.table(out)
    assert text.count("| early-AJEST |") == 4 and "nan" not in text  # main and paired tables
    for runs in out["results"].values():
        assert [r.step for r in runs[0]["records"]] == [3, 6]
        assert runs[0]["records"][-1].trained == 6 * 8
