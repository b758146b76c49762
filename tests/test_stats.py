"""loader.stats for a logger: per-interval changes (`copy` / `since`), `reset`, and the whole job's
figures summed over ranks (`reduce`)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from curatedloader import CuratedLoader, LoaderStats, TopK


def make(n: int = 40) -> CuratedLoader:
    return CuratedLoader(TensorDataset(torch.arange(float(n))), batch_size=2, super_batch_size=5, seed=0,
                         scorer=lambda b: b[0], selector=TopK())


def test_since_a_copy_gives_the_intervals_counts():
    loader = make()
    it = iter(loader)
    next(it), next(it)
    before = loader.stats.copy()
    for _ in range(3):
        next(it)
    step = loader.stats.since(before)
    assert (step.steps, step.seen, step.trained, step.rejected) == (3, 15, 6, 9)
    assert 0 < step.step_ms <= loader.stats.step_ms and before.steps == 2  # the copy did not move
    with pytest.raises(TypeError, match="earlier"):
        loader.stats.since(before.as_dict())


def test_reset_zeroes_and_counting_goes_on():
    loader = make()
    it = iter(loader)
    next(it)
    loader.stats.reset()
    assert loader.stats == LoaderStats()
    next(it)
    assert (loader.stats.steps, loader.stats.seen, loader.stats.trained) == (1, 5, 2)


def test_reduce_without_a_process_group_is_a_copy():
    loader = make()
    list(loader)
    total = loader.stats.reduce()
    assert total == loader.stats and total is not loader.stats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reduce_on_rank(rank: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        loader = make(40 + 20 * rank)  # unequal shares, so the sum is not twice one rank's
        list(loader)
        out[rank] = (loader.stats.as_dict(), loader.stats.reduce().as_dict())
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_reduce_sums_every_ranks_counts_and_times():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(reduce_on_rank, args=(free_port(), out), nprocs=2)
        (own0, total0), (own1, total1) = out[0], out[1]
    assert total0 == total1
    for key in ("steps", "seen", "trained", "rejected"):
        assert total0[key] == own0[key] + own1[key] and own0[key] != own1[key]
    assert total0["step_ms"] == pytest.approx(own0["step_ms"] + own1["step_ms"])
