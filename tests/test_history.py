"""Selection from recorded training losses (LossHistory): plans by id, unbiased weights, nothing loaded
for pruned samples, annealing, exact resume."""
import doctest

import pytest
import torch
from torch.utils.data import Dataset, SequentialSampler, TensorDataset

from curatedloader import CuratedLoader, LossHistory, TopK, history


class Logged(Dataset):
    """Rows (index as float, index); remembers every index read."""

    def __init__(self, n: int):
        self.n, self.read = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.read.append(i)
        return float(i), i


def losses_of(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 100.0  # a loss that grows with the index: low indices are well learned


def run_epoch(loader, record=True) -> list[list[int]]:
    batches = []
    for x, y, w in loader:
        assert torch.equal(loader.ids, y) and w.shape == y.shape
        if record:
            loader.record(losses_of(x))
        batches.append(y.tolist())
    return batches


def test_unseen_samples_are_kept_and_well_learned_ones_pruned_at_the_rate():
    h = LossHistory(prune=0.4)
    n = 20000
    assert bool(h.plan(0, n).keep.all())  # nothing recorded: the full data
    h.record(torch.arange(n), torch.arange(n).float())
    plan = h.plan(1, n)
    learned = torch.arange(n) < (n - 1) / 2  # below the mean loss
    assert bool(plan.keep[~learned].all()) and bool((plan.weight[~learned] == 1).all())
    dropped = 1 - plan.keep[learned].float().mean().item()
    assert abs(dropped - 0.4) < 0.02
    # unbiased: the weights of the kept well-learned samples sum to about their number before pruning
    assert abs((plan.weight * plan.keep)[learned].sum().item() / learned.sum().item() - 1) < 0.03


def test_learnability_prunes_unlearnable_samples_without_rescaling():
    losses = torch.tensor([3.0, 3.0, 0.1, 2.0] * 500)
    reference = torch.tensor([2.9, 0.1, 0.0, 2.0] * 500)  # learnability 0.1, 2.9, 0.1, 0.0
    h = LossHistory(prune=1 - 1e-9, reference=reference, rescale=False)
    h.record(torch.arange(2000), losses)
    plan = h.plan(1, 2000)
    assert plan.keep.view(500, 4).all(0).tolist() == [False, True, False, False]
    assert bool((plan.weight == 1).all())


def test_pruned_samples_are_never_loaded():
    data = Logged(200)
    loader = CuratedLoader(data, batch_size=16, shuffle=True, seed=1, history=LossHistory(prune=0.5))
    run_epoch(loader)
    data.read.clear()
    second = sum(run_epoch(loader), [])
    plan = loader.history.current
    pruned = set(torch.nonzero(~plan.keep).squeeze(1).tolist())
    assert 30 < len(pruned) < 70
    assert sorted(data.read) == sorted(second) and not pruned & set(data.read)
    assert len(second) == 200 - len(pruned) and len(loader) == -(-len(second) // 16)


def test_weights_are_attached_by_id_and_annealing_restores_the_full_data():
    data = TensorDataset(torch.arange(100).float(), torch.arange(100))
    loader = CuratedLoader(data, batch_size=10, shuffle=True, seed=0, history=LossHistory(0.5, epochs=4, anneal=0.25))
    sizes = []
    for epoch in range(4):
        seen = []
        for x, y, w in loader:
            loader.record(losses_of(x))
            plan = loader.history.current
            assert torch.equal(w, plan.weight[y])
            seen += y.tolist()
        sizes.append(len(seen))
    assert sizes[0] == sizes[3] == 100 and sizes[1] < 100 and sizes[2] < 100
    assert bool((loader.history.current.weight == 1).all())  # annealing: no pruning, no rescaling


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_replays_the_plan_and_the_history(workers):
    def fresh():
        return CuratedLoader(TensorDataset(torch.arange(120).float(), torch.arange(120)), batch_size=8, shuffle=True,
                             seed=3, num_workers=workers, history=LossHistory(prune=0.5))

    full = fresh()
    reference = [run_epoch(full) for _ in range(3)]
    loader = fresh()
    run_epoch(loader)
    it, head = iter(loader), []
    for _ in range(4):
        x, y, w = next(it)
        loader.record(losses_of(x))
        head.append(y.tolist())
    state = loader.state_dict()
    del it
    resumed = fresh()
    resumed.load_state_dict(state)
    assert head + run_epoch(resumed) == reference[1]
    assert run_epoch(resumed) == reference[2]


def test_ids_are_those_of_the_selected_rows():
    data = TensorDataset(torch.arange(64).float(), torch.arange(64))
    loader = CuratedLoader(data, batch_size=4, super_batch_size=16, shuffle=True, seed=0,
                           scorer=lambda batch: batch[0], selector=TopK(), history=LossHistory(prune=0.5))
    for x, y, w in loader:
        assert torch.equal(loader.ids, y)
        loader.record(losses_of(x))


def test_bad_arguments_are_named():
    data = TensorDataset(torch.arange(8).float())
    with pytest.raises(ValueError, match="record.. needs a history"):
        CuratedLoader(data, batch_size=2).record(torch.zeros(2))
    with pytest.raises(ValueError, match="without ids needs a batch"):
        CuratedLoader(data, batch_size=2, history=LossHistory()).record(torch.zeros(2))
    with pytest.raises(ValueError, match="without a sampler"):
        CuratedLoader(data, batch_size=2, sampler=SequentialSampler(data), history=LossHistory())
    with pytest.raises(TypeError, match="history must be a LossHistory"):
        CuratedLoader(data, batch_size=2, history=0.5)
    with pytest.raises(ValueError, match="prune must be"):
        LossHistory(prune=1.0)
    with pytest.raises(ValueError, match="reduction='none'"):
        LossHistory().record(torch.arange(3), torch.zeros(()))
    with pytest.raises(ValueError, match="same history= setting"):
        CuratedLoader(data, batch_size=2, history=LossHistory()).load_state_dict(
            CuratedLoader(data, batch_size=2).state_dict())


def test_docstring_examples_run():
    result = doctest.testmod(history)
    assert result.attempted > 0 and result.failed == 0
