"""Per-rank state: a state saved on one rank is never silently loaded on another; `gather_state=True`
holds every rank's state in one dict (for checkpoints that rank 0 alone writes: Lightning, Accelerate)."""
import pytest
import torch
from torch.utils.data import TensorDataset

import curatedloader.loader as loader_module
from curatedloader import CuratedLoader


def make(**kw) -> CuratedLoader:
    return CuratedLoader(TensorDataset(torch.arange(40.0), torch.arange(40)), batch_size=3, super_batch_size=6,
                         scorer=lambda b: b[0], shuffle=True, seed=1, **kw)


def as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(loader_module, "rank_world", lambda: (rank, world))


def test_a_state_saved_on_another_rank_is_refused_naming_the_ranks(monkeypatch):
    as_rank(monkeypatch, 0, 2)
    run = make()
    it = iter(run)
    next(it)
    state = run.state_dict()
    as_rank(monkeypatch, 1, 2)
    with pytest.raises(ValueError, match="saved on rank 0, this is rank 1.*gather_state"):
        make().load_state_dict(state)


def test_a_gathered_state_gives_each_rank_its_own_entry(monkeypatch):
    runs = []
    for rank in range(2):
        as_rank(monkeypatch, rank, 2)
        run = make()
        it = iter(run)
        head = [next(it)[1].tolist() for _ in range(2)]
        runs.append((head, run.state_dict(), [b[1].tolist() for b in it]))
    gathered = {"ranks": [state for _, state, _ in runs]}  # what gather_state=True's state_dict returns
    for rank in range(2):
        as_rank(monkeypatch, rank, 2)
        resumed = make(gather_state=True)
        resumed.load_state_dict(gathered)
        assert [b[1].tolist() for b in resumed] == runs[rank][2]
    assert runs[0][2] != runs[1][2]  # (another world size: tests/test_elastic.py)


def test_gather_state_without_a_process_group_holds_the_one_state():
    run = make(gather_state=True)
    it = iter(run)
    head = [next(it)[1].tolist() for _ in range(2)]
    state = run.state_dict()
    assert len(state["ranks"]) == 1
    resumed = make()
    resumed.load_state_dict(state)
    assert head + [b[1].tolist() for b in resumed] == [b[1].tolist() for b in make()]
    with pytest.raises(TypeError, match="gather_state"):
        make(gather_state=1)
