"""Two gloo ranks on CPU: disjoint shards of the data, equal numbers of equal-size batches."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from curatedloader import CuratedLoader, TopK


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
