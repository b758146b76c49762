"""The drop-in contract: the same scenarios through DataLoader and CuratedLoader(scorer=None) give the same
outputs. Where a difference is intended (selection on), the test says why."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from curatedloader import CuratedLoader, Early, Scores, Steps, TopK
from test_loader import Stream

fast = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dataset(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n).float(), torch.arange(n))


def rows(batches) -> list:
    return [b[1].tolist() for b in batches]


def by_value(batch):
    return batch[0]


# ---- consumers that stop after len(loader) batches (Lightning, Accelerate) ---------------------

@pytest.mark.parametrize("make", [
    lambda ds: DataLoader(ds, batch_size=5, shuffle=True),
    lambda ds: CuratedLoader(ds, batch_size=5, shuffle=True),
    lambda ds: CuratedLoader(ds, batch_size=2, super_batch_size=5, shuffle=True, scorer=by_value),
])
def test_a_consumer_that_stops_after_len_batches_gets_every_epoch(make):
    loader = make(dataset(100))
    counts = []
    for _ in range(3):
        it = iter(loader)
        n = len(loader)
        counts.append((n, sum(1 for _ in itertools.islice(it, n))))
    assert counts == [(20, 20)] * 3


@pytest.mark.parametrize("kwargs", [dict(), dict(super_batch_size=10, scorer=by_value),
                                    dict(super_batch_size=10, scorer=by_value, schedule=Steps(2, 4))])
def test_len_is_constant_while_an_epoch_runs(kwargs):
    loader = CuratedLoader(dataset(100), batch_size=2, shuffle=True, **kwargs)
    for _ in range(2):
        it = iter(loader)
        before = len(loader)
        taken = [next(it) for _ in range(3)]
        assert len(loader) == before == len(it) and len(taken) == 3
        assert before == 3 + sum(1 for _ in it)  # exact for Always and Steps


def test_len_with_early_is_never_short():
    # Early switches off when the learner's loss falls below the reference's; len bounds the epoch from above
    def scorer(batch):
        x = batch[0]
        return Scores(learner=x * 0 + 1, reference=x * 0 + (2.0 if x[0] > 50 else 0.5))

    loader = CuratedLoader(dataset(100), batch_size=2, super_batch_size=10, scorer=scorer, schedule=Early())
    it = iter(loader)
    n = len(loader)
    assert n >= sum(1 for _ in it)


# ---- errors -------------------------------------------------------------------------------------

class Faulty(TensorDataset):
    def __getitem__(self, i):
        if i == 5:
            raise RuntimeError("bad sample 5")
        return super().__getitem__(i)


def outcomes(loader) -> list:
    it, out = iter(loader), []
    while True:
        try:
            out.append(next(it)[1].tolist())
        except StopIteration:
            return out
        except Exception as e:  # DataLoader re-raises a worker's error wrapped: compare the message
            out.append("bad sample 5" in str(e))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_exception_for_one_batch_propagates_and_the_iterator_goes_on(workers):
    ds = Faulty(torch.arange(12).float(), torch.arange(12))
    expected = outcomes(DataLoader(ds, batch_size=2, num_workers=workers))
    assert expected == [[0, 1], [2, 3], True, [6, 7], [8, 9], [10, 11]]
    assert outcomes(CuratedLoader(ds, batch_size=2, num_workers=workers)) == expected


def test_a_failed_selection_step_consumes_nothing():
    calls = []

    def flaky(batch):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return batch[0]

    def run(scorer):
        return CuratedLoader(dataset(30), batch_size=2, super_batch_size=5, shuffle=True, seed=3, scorer=scorer,
                             selector=TopK())

    full = rows(run(by_value))
    loader = run(flaky)
    it = iter(loader)
    got = [next(it)[1].tolist()]
    with pytest.raises(RuntimeError, match="out of memory"):
        next(it)
    state = loader.state_dict()  # a checkpoint right after the failure: the super-batch is not consumed
    resumed = run(by_value)
    resumed.load_state_dict(state)
    assert got + rows(resumed) == full
    assert got + [b[1].tolist() for b in it] == full  # the live iterator retries it too


# ---- iterable datasets, collates, workers ------------------------------------------------------

@pytest.mark.parametrize("workers, drop_last", [(0, False), (2, False), (2, True)])
def test_iterable_dataset_is_batched_within_each_workers_stream(workers, drop_last):
    expected = rows(DataLoader(Stream(23), batch_size=4, num_workers=workers, drop_last=drop_last))
    assert rows(CuratedLoader(Stream(23), batch_size=4, num_workers=workers, drop_last=drop_last)) == expected


class Dicts(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"image": torch.full((2,), float(i)), "boxes": torch.zeros(i % 3, 4)}


def detection_collate(samples):
    return [s["image"] for s in samples], [s["boxes"] for s in samples]


@pytest.mark.parametrize("collate", [lambda x: x, detection_collate])
def test_any_collate_output_passes_through_when_not_selecting(collate):
    expected = list(DataLoader(Dicts(), batch_size=3, collate_fn=collate))
    got = list(CuratedLoader(Dicts(), batch_size=3, collate_fn=collate))
    assert repr(got) == repr(expected)


def test_identity_collate_over_tuples_of_an_iterable_dataset_passes_through():
    class Tuples(IterableDataset):
        def __iter__(self):
            return iter([(i,) for i in range(5)])

    expected = list(DataLoader(Tuples(), batch_size=2, collate_fn=lambda x: x))
    assert list(CuratedLoader(Tuples(), batch_size=2, collate_fn=lambda x: x)) == expected == [[(0,), (1,)], [(2,), (3,)], [(4,)]]


class NumpyRandom(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor(np.random.rand())


def seed_numpy(worker_id: int) -> None:
    np.random.seed(100 + worker_id)


def test_worker_init_fn_seeding_numpy_gives_dataloaders_draws():
    def draws(cls):
        torch.manual_seed(0)
        return [b.tolist() for b in cls(NumpyRandom(), batch_size=2, num_workers=2, worker_init_fn=seed_numpy)]

    assert draws(CuratedLoader) == draws(DataLoader)


def record_dataset_type(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    assert type(info.dataset) is TensorDataset, type(info.dataset)


def test_get_worker_info_dataset_is_the_users_dataset():
    assert len(list(CuratedLoader(dataset(8), batch_size=2, num_workers=2, worker_init_fn=record_dataset_type))) == 4


# ---- seeding -----------------------------------------------------------------------------------

def test_torch_manual_seed_governs_the_shuffle_as_in_dataloader():
    def order(cls, seed):
        torch.manual_seed(seed)
        loader = cls(dataset(30), batch_size=5, shuffle=True)
        return [rows(loader), rows(loader)]

    assert order(CuratedLoader, 1) == order(DataLoader, 1)
    assert order(CuratedLoader, 2) == order(DataLoader, 2) != order(CuratedLoader, 1)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_generator_gives_dataloaders_batches_in_every_epoch(workers):
    def epochs(cls):
        loader = cls(dataset(30), batch_size=4, shuffle=True, num_workers=workers,
                     generator=torch.Generator().manual_seed(9))
        return [rows(loader) for _ in range(3)]

    assert epochs(CuratedLoader) == epochs(DataLoader)


def test_an_explicit_seed_ignores_the_global_generator():
    def run(global_seed):
        torch.manual_seed(global_seed)
        return rows(CuratedLoader(dataset(30), batch_size=4, shuffle=True, seed=5))

    assert run(1) == run(2)


# ---- surface -----------------------------------------------------------------------------------

ATTRIBUTES = ("dataset", "batch_size", "num_workers", "collate_fn", "pin_memory", "drop_last", "timeout",
              "worker_init_fn", "multiprocessing_context", "generator", "prefetch_factor", "persistent_workers",
              "pin_memory_device", "in_order")


@pytest.mark.parametrize("kwargs", [dict(), dict(num_workers=2, prefetch_factor=3, persistent_workers=True,
                                                 timeout=5.0, worker_init_fn=seed_numpy,
                                                 generator=torch.Generator(), in_order=True)])
def test_dataloader_attributes_are_there_with_dataloaders_values(kwargs):
    ds = dataset(10)
    plain, curated = DataLoader(ds, batch_size=3, **kwargs), CuratedLoader(ds, batch_size=3, **kwargs)
    for name in ATTRIBUTES:
        assert getattr(curated, name) == getattr(plain, name), name
    assert len(curated.batch_sampler) == len(curated) == len(plain)
    assert len(curated.sampler) == len(plain.sampler) == 10


def test_positional_arguments_follow_dataloader():
    ds = dataset(20)
    expected = rows(DataLoader(ds, 4, True, None, None, 0, None, False, True, 0, None, None,
                               torch.Generator().manual_seed(1)))
    got = rows(CuratedLoader(ds, 4, True, None, None, 0, None, False, True, 0, None, None,
                             torch.Generator().manual_seed(1)))
    assert got == expected and len(got) == 5


@pytest.mark.parametrize("kwargs", [dict(num_workers=-1), dict(prefetch_factor=2), dict(persistent_workers=True),
                                    dict(timeout=-1), dict(shuffle=True, sampler=[0, 1])])
def test_constructor_validation_matches_dataloader(kwargs):
    with pytest.raises(ValueError) as plain:
        DataLoader(dataset(10), batch_size=2, **kwargs)
    with pytest.raises(ValueError) as curated:
        CuratedLoader(dataset(10), batch_size=2, **kwargs)
    assert type(curated.value) is type(plain.value)


def test_unbatched_loading_is_refused_naming_batch_size():
    with pytest.raises(ValueError, match="batch_size=None"):
        CuratedLoader(dataset(10), batch_size=None)


@pytest.mark.parametrize("attribute", ["sampler", "batch_sampler"])
def test_set_epoch_on_the_sampler_views_steers_the_loader(attribute):
    def epoch_rows(epoch, via):
        loader = CuratedLoader(dataset(20), batch_size=4, shuffle=True, seed=0)
        if via:
            getattr(loader, attribute).set_epoch(epoch)
        else:
            loader.set_epoch(epoch)
        return rows(loader)

    assert epoch_rows(3, True) == epoch_rows(3, False) != epoch_rows(0, False)


# ---- state -------------------------------------------------------------------------------------

def make(**kw):
    return CuratedLoader(dataset(40), batch_size=3, super_batch_size=6, scorer=by_value, shuffle=True, seed=2, **kw)


def test_state_from_another_configuration_is_refused_naming_the_difference():
    state = make().state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        CuratedLoader(dataset(40), batch_size=4, super_batch_size=6, scorer=by_value, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="rows"):
        CuratedLoader(dataset(41), batch_size=3, super_batch_size=6, scorer=by_value, seed=2).load_state_dict(state)


def test_set_epoch_to_the_saved_epoch_keeps_the_position():
    loader = make()
    full = rows(loader) + rows(loader)
    run = make()
    rows(run)
    it = iter(run)  # epoch 1
    head = [next(it)[1].tolist() for _ in range(2)]
    resumed = make()
    resumed.load_state_dict(run.state_dict())
    resumed.set_epoch(1)  # the DistributedSampler idiom: must not restart the epoch
    assert head + rows(resumed) == full[len(full) // 2:]


def test_set_epoch_between_iter_and_the_first_batch_chooses_that_iterators_epoch():
    # DataLoader iterates its sampler at the first batch; Lightning calls iter() (twice: once to check the
    # loader is iterable, dropping that iterator), then set_epoch, then next()
    for selecting in (dict(), dict(super_batch_size=6, scorer=by_value)):
        def loader():
            return CuratedLoader(dataset(40), batch_size=3, shuffle=True, seed=2, **selecting)

        reference = loader()
        epochs = [rows(reference), rows(reference)]
        lit = loader()
        got = []
        for epoch in range(2):
            iter(lit)
            it = iter(lit)
            lit.set_epoch(epoch)
            got.append([b[1].tolist() for b in it])
        assert got == epochs


def test_load_state_dict_after_iter_repositions_the_live_iterator():
    run = make()
    it = iter(run)
    head = [next(it)[1].tolist() for _ in range(3)]
    state = run.state_dict()
    other = make()
    live = iter(other)
    next(live)
    other.load_state_dict(state)
    assert head + [b[1].tolist() for b in live] == rows(make())


def test_in_order_false_cannot_be_saved():
    loader = CuratedLoader(dataset(10), batch_size=2, num_workers=1, in_order=False)
    with pytest.raises(ValueError, match="in_order"):
        loader.state_dict()


class CountingStream(IterableDataset):
    """A stateful stream (torchdata's Stateful contract) that counts what it reads."""

    def __init__(self, n):
        self.n, self.next_row, self.reads = n, 0, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        while self.next_row < self.n:
            self.reads += 1
            self.next_row += 1
            yield torch.tensor(float(self.next_row - 1)), torch.tensor(self.next_row - 1)
        self.next_row = 0

    def state_dict(self):
        return {"next_row": self.next_row}

    def load_state_dict(self, state):
        self.next_row = state["next_row"]


@pytest.mark.parametrize("selecting", [False, True])
def test_a_stateful_iterable_resumes_through_its_own_state_without_rereading(selecting):
    kw = dict(super_batch_size=5, scorer=by_value, selector=TopK()) if selecting else {}
    full = rows(CuratedLoader(CountingStream(23), batch_size=2, **kw))
    run = CuratedLoader(CountingStream(23), batch_size=2, **kw)
    it = iter(run)
    head = [next(it)[1].tolist() for _ in range(3)]
    stream = CountingStream(23)
    resumed = CuratedLoader(stream, batch_size=2, **kw)
    resumed.load_state_dict(run.state_dict())
    assert head + rows(resumed) == full
    assert stream.reads <= 23 - sum(map(len, head)) + 2  # at most the unconsumed part of one piece again


# ---- properties of the iterator ----------------------------------------------------------------

@fast
@given(n=st.integers(1, 50), b=st.integers(1, 5), stop=st.integers(0, 12), selecting=st.booleans(),
       workers=st.integers(0, 1))
def test_two_live_iterators_and_resume_into_a_live_iterator(n, b, stop, selecting, workers):
    kw = dict(super_batch_size=2 * b, scorer=by_value) if selecting else {}

    def loader():
        return CuratedLoader(dataset(n), batch_size=b, shuffle=True, seed=n, num_workers=workers, **kw)

    reference = loader()
    epochs = [rows(reference), rows(reference)]
    two = loader()
    first, second = iter(two), iter(two)  # as DataLoader: each iter() is a new epoch, each its own cursor
    assert [b[1].tolist() for b in second] == epochs[1]
    assert [b[1].tolist() for b in first] == epochs[0]
    run = loader()
    it = iter(run)
    length = len(run)
    head = [b[1].tolist() for b in itertools.islice(it, stop)]
    assert len(run) == length == len(epochs[0])
    resumed = loader()
    live = iter(resumed)
    resumed.load_state_dict(run.state_dict())
    assert head + [b[1].tolist() for b in live] == epochs[0]
