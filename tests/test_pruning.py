"""Pruning: scores, near-duplicates, selection, DRO weights, keep-lists (no encoder here)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn.covariance import LedoitWolf

from curatedloader.pruning import (GroupDRO, group_mean, load_keep, near_duplicates, sample_weights, save_keep,
                                   score, select, weighted_mean)
from curatedloader.pruning import index
from curatedloader.pruning.scoring import ledoit_wolf


def clusters(n=1000, d=32, k=10, seed=0):
    """Unit cluster centres plus noise half as large: typical rows, no near-duplicates (cosine ~0.8)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    return (centres[labels] + 0.5 * rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32), labels


def test_planted_near_duplicates_are_found():
    x, _ = clusters(2000)
    rng = np.random.default_rng(1)
    originals = rng.choice(len(x), 100, replace=False)
    copies = x[originals] + 0.02 * rng.standard_normal((100, x.shape[1])).astype(np.float32) / np.sqrt(x.shape[1])
    drop = near_duplicates(np.vstack([x, copies]), eps=0.05)
    pair_found = drop[originals] | drop[len(x):]
    assert pair_found.mean() >= 0.95
    assert not (drop[originals] & drop[len(x):]).any()  # one of each pair is kept
    assert drop[:len(x)].sum() - drop[originals].sum() <= 0.01 * len(x)  # few false alarms


@pytest.mark.parametrize("method", ["prototype", "gaussian", "knn", "knn-ivf", "knn-pq"])
def test_planted_outliers_score_lowest(method, monkeypatch):
    if method.startswith("knn-"):  # the approximate indexes used beyond EXACT_MAX, IVF_FLAT_MAX rows
        monkeypatch.setattr(index, "EXACT_MAX", 500)
        monkeypatch.setattr(index, "IVF_FLAT_MAX", 500 if method == "knn-pq" else 10**9)
        assert index.knn_route(1020, 32) == {"knn-ivf": "ivf-flat", "knn-pq": "ivf-pq"}[method]
        method = "knn"
    x, _ = clusters(1000)
    rng = np.random.default_rng(2)
    outliers = rng.standard_normal((20, x.shape[1])).astype(np.float32)  # norm ~ √d: far, random directions
    s = score(np.vstack([x, outliers]), method, k=20 if method == "prototype" else None)  # 2x the clusters
    assert set(np.argsort(s)[:20]) == set(range(len(x), len(x) + 20))


def test_gaussian_ranks_like_mahalanobis_within_groups():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((90, 40)).astype(np.float32) @ rng.standard_normal((40, 40)).astype(np.float32)
    groups = np.repeat([5, 7, 9], 30)  # 30 samples in 40 dims: only shrinkage makes Σ invertible
    s = score(x, "gaussian", groups=groups)
    for g in (5, 7, 9):
        xg = x[groups == g]
        lw = LedoitWolf().fit(xg)
        np.testing.assert_allclose(ledoit_wolf(xg)[1], lw.covariance_, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(np.argsort(-s[groups == g]), np.argsort(lw.mahalanobis(xg)))


@pytest.mark.parametrize("strategy", ["easy", "hard", "ccs"])
def test_same_seed_same_result(strategy):
    x, labels = clusters(600)
    runs = [(score(x, "prototype", seed=s), near_duplicates(x, eps=0.3, seed=s)) for s in (4, 4)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    sels = [select(runs[0][0], 0.3, strategy=strategy, groups=labels, seed=s) for s in (4, 4, 5)]
    for key in ("indices", "scores", "weights"):
        np.testing.assert_array_equal(sels[0][key], sels[1][key])
    assert (strategy == "ccs") == (not np.array_equal(sels[0]["indices"], sels[2]["indices"]))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), keep=st.floats(0.01, 1.0),
       strategy=st.sampled_from(["easy", "hard", "ccs"]), seed=st.integers(0, 3))
def test_group_quotas_are_exact(sizes, keep, strategy, seed):
    rng = np.random.default_rng(seed)
    groups = rng.permutation(np.repeat(np.arange(len(sizes)) * 3, sizes))
    drop = rng.random(len(groups)) < 0.2
    cand = np.bincount(groups[~drop], minlength=3 * len(sizes))[::3]
    sel = select(rng.standard_normal(len(groups)), keep, strategy=strategy, groups=groups, drop=drop, seed=seed)
    kept = np.bincount(groups[sel["indices"]], minlength=3 * len(sizes))[::3]
    assert kept.sum() == round(keep * cand.sum())
    assert (np.abs(kept - kept.sum() * cand / max(cand.sum(), 1)) < 1).all()
    assert not drop[sel["indices"]].any() and (np.diff(sel["indices"]) > 0).all()
    assert len(sel["weights"]) == 0 or np.isclose(sel["weights"].mean(), 1)


def test_select_easy_hard_and_mapping_quotas():
    s = np.arange(10.0)
    groups = np.array([0] * 5 + [1] * 5)
    assert select(s, 4, strategy="easy", groups=groups)["indices"].tolist() == [3, 4, 8, 9]
    assert select(s, 0.2, strategy="hard")["indices"].tolist() == [0, 1]
    assert select(s, {0: 1, 1: 3}, groups=groups)["indices"].tolist() == [4, 7, 8, 9]
    with pytest.raises(ValueError, match="group 1 has 2 candidates, too few for its quota 3"):
        select(s, {0: 1, 1: 3}, groups=groups, drop=np.arange(10) >= 7)


def test_ccs_covers_the_score_range():
    s = np.random.default_rng(0).standard_normal(5000) ** 3  # long tails, dense middle
    easy, ccs = (select(s, 0.1, strategy=st_)["scores"] for st_ in ("easy", "ccs"))
    assert ccs.min() < np.quantile(s, 0.01) and ccs.max() > np.quantile(s, 0.99) and easy.min() > np.quantile(s, 0.8)


@pytest.mark.parametrize("call, match", [
    (lambda: score(np.full((5, 3), np.nan, np.float32)), "features: non-finite values in row 0"),
    (lambda: score(np.ones((5, 3), np.int64)), "features: expected a floating-point array"),
    (lambda: score(np.ones(5, np.float32)), r"features: expected a non-empty \[N, d\] array"),
    (lambda: score(np.ones((5, 3), np.float32), "mean"), "method: expected one of"),
    (lambda: score(np.eye(5, dtype=np.float32), "gaussian", groups=[0, 0, 1, 1, 2]), "group 2 has 1 sample"),
    (lambda: score(np.eye(14, dtype=np.float32), "knn", groups=[0] * 12 + [3] * 2), "group 3 has 2 samples; knn"),
    (lambda: select(np.ones(5), 1.5), r"keep: expected a fraction in \(0, 1\]"),
    (lambda: select(np.ones(5), 6), "keep: expected"),
    (lambda: select(np.ones(5), 0.5, drop=np.ones(4, bool)), "drop: expected a bool array"),
    (lambda: select(np.array([1.0, np.nan]), 1), "scores: expected a finite"),
    (lambda: near_duplicates(np.ones((5, 3), np.float32), eps=1.0), "eps: expected"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_group_dro_follows_doremi_rule():
    dro = GroupDRO(3, eta=1.0, smoothing=1e-3)
    held = dro.weights
    learner, reference = torch.tensor([2.0, 1.0, 1.0]), torch.tensor([1.0, 1.5, 1.0])
    dro.update(learner, reference)
    w = torch.softmax(torch.log(torch.full((3,), 1 / 3)) + torch.tensor([1.0, 0.0, 0.0]), 0)
    torch.testing.assert_close(held, 0.999 * w + 0.001 / 3)  # updated in place: a loader sees it
    dro.update(learner, reference)
    assert held[0] > held[1] == held[2]
    torch.testing.assert_close(dro.average_weights.sum(), torch.tensor(1.0))
    assert dro.average_weights[0] < held[0]
    with pytest.raises(ValueError, match="learner_group_loss: expected 3 finite"):
        dro.update(torch.tensor([1.0, float("nan"), 0.0]), reference)


def test_group_dro_average_stays_exact_over_a_long_run():
    dro = GroupDRO(2, smoothing=0.0)
    dro.weights.copy_(torch.tensor([0.1, 0.9]))
    for _ in range(20_000):  # no excess: the weights, hence their average, stay put
        dro.update(torch.zeros(2), torch.zeros(2))
    torch.testing.assert_close(dro.average_weights, dro.weights, rtol=0, atol=1e-6)


def test_weighted_loss_helpers():
    loss, y = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 2])
    torch.testing.assert_close(group_mean(loss, y, 3), torch.tensor([2.0, 0.0, 5.0]))
    torch.testing.assert_close(weighted_mean(loss, sample_weights(torch.full((3,), 1 / 3), y)), loss.mean())
    torch.testing.assert_close(weighted_mean(loss, torch.tensor([1.0, 0.0, 1.0])), torch.tensor(3.0))


def test_keep_list_round_trip(tmp_path):
    save_keep(tmp_path / "a.txt", np.array([3, 1, 4]))
    assert load_keep(tmp_path / "a.txt").tolist() == [3, 1, 4]
    save_keep(tmp_path / "b.txt", ["s-000.tar#k1", "s-001.tar#k9"])
    assert load_keep(tmp_path / "b.txt") == ["s-000.tar#k1", "s-001.tar#k9"]
    with pytest.raises(ValueError, match="ids: expected all ints"):
        save_keep(tmp_path / "c.txt", [1, "a"])
    (tmp_path / "d.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match="not a curatedloader id list"):
        load_keep(tmp_path / "d.txt")
    with pytest.raises(FileNotFoundError, match="path: no keep-list file"):
        load_keep(tmp_path / "missing.txt")
