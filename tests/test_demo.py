"""The demo runs end to end, and learnability selection keeps flipped labels out of training."""
import argparse

import torch

from curatedloader import cli
from curatedloader.demo import digits, irreducible_losses, main, train_learner, train_reference


def test_selection_avoids_noisy_labels_and_beats_uniform():
    args = argparse.Namespace(batch_size=32, filter_ratio=0.8, temperature=0.25, samples=3200, eval_every=1600)
    split = digits(0.3, seed=0)
    table = irreducible_losses(train_reference(split.holdout, 0), split.train)
    uniform, topk = (train_learner(m, split, table, args, 0) for m in ("uniform", "topk"))
    assert abs(uniform.noisy_fraction - 0.3) < 0.06 and topk.noisy_fraction < 0.1
    assert topk.at_samples > uniform.at_samples


def test_demo_command_prints_table_and_writes_plot(tmp_path, capsys):
    out = tmp_path / "curve.png"
    assert main(["--seeds", "1", "--samples", "960", "--eval-every", "480", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(m in text for m in ("uniform", "topk", "jest", "history", "learnability", "noisy%", "equal CPU"))
    assert out.stat().st_size > 1000


def test_equal_compute_runs_reach_plains_cpu_budget_and_learnability_avoids_noise():
    args = argparse.Namespace(batch_size=32, filter_ratio=0.8, temperature=0.25, samples=3200, eval_every=1600,
                              prune=0.5, prune_learnability=0.95)
    split = digits(0.3, seed=0)
    table = irreducible_losses(train_reference(split.holdout, 0), split.train)
    plain = train_learner("plain", split, table, args, 0)
    budget = plain.curve[-1][1]
    learn = train_learner("learnability", split, table, args, 0, budget)
    assert plain.at_budget == plain.at_samples and plain.curve[-1][0] == 3200
    assert learn.curve[-1][1] >= budget and learn.curve[-1][0] >= 3200
    assert learn.noisy_fraction < 0.2 < plain.noisy_fraction


def test_digits_noise_is_symmetric_and_seeded():
    a, b = digits(0.3, seed=1), digits(0.3, seed=1)
    assert torch.equal(a.train.tensors[1], b.train.tensors[1])
    assert 0.25 < a.noisy.float().mean() < 0.35


def test_cli_names_an_unknown_command(capsys):
    assert cli.main(["demoo"]) == 2
    assert "unknown command 'demoo'" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0 and "prune" in capsys.readouterr().out
