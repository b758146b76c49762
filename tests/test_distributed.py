"""Two gloo ranks on CPU: disjoint shards of the data, equal numbers of equal-size batches."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from curatedloader import CuratedLoader, TopK


pytestmark = pytest.mark.distributed

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, world: int, port: int, n: int, selecting: bool, drop_last: bool, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ds = TensorDataset(torch.arange(n).float(), torch.arange(n))
        kwargs = dict(scorer=lambda b: b[0], selector=TopK(), super_batch_size=6) if selecting else {}
        loader = CuratedLoader(ds, batch_size=3, shuffle=True, seed=4, drop_last=drop_last, **kwargs)
        out[rank] = ([b[1].tolist() for b in loader], len(loader))
    except ValueError as e:
        out[rank] = str(e)
    finally:
        dist.destroy_process_group()


def run(world: int, n: int, selecting: bool, drop_last: bool = False):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(run_rank, args=(world, free_port(), n, selecting, drop_last, out), nprocs=world)
        return [out[r] for r in range(world)]


@pytest.mark.parametrize("selecting", [False, True])
def test_ranks_split_data_and_yield_equal_batches(selecting):
    (a, len_a), (b, len_b) = run(2, 25, selecting)
    assert len(a) == len(b) == len_a == len_b
    assert [len(x) for x in a] == [len(x) for x in b]
    flat_a = {i for batch in a for i in batch}
    flat_b = {i for batch in b for i in batch}
    if not selecting:  # 25 samples over 2 ranks: one padded repeat, as DistributedSampler
        assert flat_a | flat_b == set(range(25)) and len(flat_a & flat_b) <= 1


def test_rank_without_data_fails_fast():
    results = run(2, 1, False, drop_last=True)  # one sample, dropped to share evenly: nothing left
    assert all(isinstance(r, str) and "has no data" in r for r in results)


def _rank_early(rank: int, world: int, port: int, out) -> None:
    from curatedloader import Early, Scores

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    n = 20 if rank == 0 else 30  # a node missing files: the ranks see different dataset lengths
    ds = TensorDataset(torch.arange(n).float(), torch.arange(n))
    scorer = lambda b: Scores(learner=b[0] * 0 + 1, reference=b[0] * 0 + 2)  # noqa: E731
    loader = CuratedLoader(ds, batch_size=2, super_batch_size=4, scorer=scorer, schedule=Early())
    dist.init_process_group("gloo", rank=rank, world_size=world)  # after the loader, as Lightning users do
    try:
        out[rank] = len(list(loader))
    except ValueError as e:
        out[rank] = str(e)
    finally:
        dist.destroy_process_group()


def test_ranks_that_disagree_on_the_epoch_fail_clearly_on_every_rank():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_early, args=(2, free_port(), out), nprocs=2)
        results = [out[r] for r in range(2)]
    assert all(isinstance(r, str) and "ranks disagree" in r for r in results), results


def _rank_late_group(rank: int, world: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ds = TensorDataset(torch.arange(24).float(), torch.arange(24))
    loader = CuratedLoader(ds, batch_size=3, shuffle=True)  # built before the process group exists
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out[rank] = ([b[1].tolist() for b in loader], len(loader))
    finally:
        dist.destroy_process_group()


def test_a_loader_built_before_init_process_group_splits_the_data():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_late_group, args=(2, free_port(), out), nprocs=2)
        (a, len_a), (b, len_b) = out[0], out[1]
    flat_a, flat_b = {i for x in a for i in x}, {i for x in b for i in x}
    assert len_a == len_b == len(a) == len(b) == 4
    assert not flat_a & flat_b and flat_a | flat_b == set(range(24))
