"""Elastic resume: a map-style run saved on N ranks goes on on M ranks (and with other num_workers) with
every sample of the interrupted epoch trained, none twice but for DistributedSampler's padding; where it
cannot, a ValueError naming world_size. Ranks are simulated in one process (no collective is needed)."""
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DistributedSampler, TensorDataset

import curatedloader.loader as loader_module
from curatedloader import CuratedLoader, TopK

fast = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


def make(n: int, workers: int = 0, selecting: bool = False, **kw) -> CuratedLoader:
    selection = dict(super_batch_size=4, scorer=lambda b: b[0], selector=TopK()) if selecting else {}
    return CuratedLoader(TensorDataset(torch.arange(float(n)), torch.arange(n)), batch_size=2, shuffle=True, seed=1,
                         num_workers=workers, gather_state=True, **selection, **kw)


def interrupted(monkeypatch, n, world, stop, **kw):
    """Each of `world` ranks trains `stop` batches; the rows they trained and the gathered state."""
    trained, states = [], []
    for rank in range(world):
        monkeypatch.setattr(loader_module, "rank_world", lambda rank=rank: (rank, world))
        loader = make(n, **kw)
        it = iter(loader)
        trained += [i for _, batch in zip(range(min(stop, len(it))), it) for i in batch[1].tolist()]
        states.append(loader._own_state())  # what state_dict() gathers across the ranks
    return trained, {"ranks": states}


def resumed(monkeypatch, state, n, world, **kw):
    trained = []
    for rank in range(world):
        monkeypatch.setattr(loader_module, "rank_world", lambda rank=rank: (rank, world))
        loader = make(n, **kw)
        loader.load_state_dict(state)
        length = len(loader)
        batches = [batch[1].tolist() for batch in loader]
        assert len(batches) <= length
        trained += [i for batch in batches for i in batch]
    return trained


@fast
@given(n=st.integers(1, 30), before=st.integers(1, 3), after=st.integers(1, 3), stop=st.integers(0, 8),
       drop_last=st.booleans())
def test_a_run_saved_on_n_ranks_trains_the_rest_of_its_epoch_on_m_ranks(monkeypatch, n, before, after, stop,
                                                                        drop_last):
    if n // max(before, after) == 0 and drop_last or n < max(before, after):
        return  # a rank without data is refused at once (tested elsewhere)
    head, state = interrupted(monkeypatch, n, before, stop, drop_last=drop_last)
    tail = resumed(monkeypatch, state, n, after, drop_last=drop_last)
    counts = Counter(head + tail)
    padding = (before - 1) + (after - 1)
    if drop_last:  # cut to equal shares and whole batches: nothing twice, at most what the cuts drop missing
        assert max(counts.values(), default=1) == 1 and n - len(counts) <= padding + after
    else:  # padded to equal shares: every sample, repeats only as padding
        assert set(counts) == set(range(n)) and sum(counts.values()) - n <= padding


@pytest.mark.parametrize("before, after", [(2, 1), (1, 3)])
def test_selection_and_another_num_workers_go_on_after_a_resize(monkeypatch, before, after):
    _, state = interrupted(monkeypatch, 40, before, 2, selecting=True)
    tail = resumed(monkeypatch, state, 40, after, selecting=True, workers=1)
    consumed = before * 2 * 4  # each saved rank consumed 2 super-batches of 4
    assert len(tail) == len(set(tail)) and (40 - consumed) // 2 - after <= len(tail) <= (40 - consumed) // 2 + after


def test_what_cannot_resume_on_another_world_size_is_refused_naming_it(monkeypatch):
    monkeypatch.setattr(loader_module, "rank_world", lambda: (0, 2))
    ds = TensorDataset(torch.arange(10.0))
    loader = CuratedLoader(ds, batch_size=2, sampler=DistributedSampler(ds, num_replicas=2, rank=0),
                           gather_state=True)
    it = iter(loader)
    next(it)
    state = {"ranks": [loader._own_state()] * 2}
    monkeypatch.setattr(loader_module, "rank_world", lambda: (0, 1))
    with pytest.raises(ValueError, match="world_size.*DistributedSampler"):
        CuratedLoader(ds, batch_size=2, sampler=DistributedSampler(ds, num_replicas=2, rank=0)).load_state_dict(state)
