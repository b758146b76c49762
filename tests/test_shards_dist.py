"""from_shards under torch.distributed: two gloo ranks on CPU."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curatedloader import CuratedLoader
from test_shards import make_shards, rows


pytestmark = pytest.mark.distributed

def _rank(rank, world, root, out):
    dist.init_process_group("gloo", init_method=f"file://{root}/init", rank=rank, world_size=world)
    try:
        urls, _ = make_shards(f"{root}/data", [7, 1, 4, 0, 9]) if rank == 0 else (None, None)
        dist.barrier()
        urls = sorted(f"{root}/data/{f}" for f in os.listdir(f"{root}/data"))
        result = {}
        for drop_last in (False, True):
            loader = CuratedLoader.from_shards(urls, 3, to_tuple=("npy", "cls"), num_workers=rank, drop_last=drop_last)
            result[drop_last] = (len(loader), rows(loader))
        try:
            CuratedLoader.from_shards(urls[:1], 3)
        except ValueError as e:
            result["error"] = str(e)
        torch.save(result, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_yield_the_same_number_of_batches(tmp_path):
    mp.start_processes(_rank, args=(2, str(tmp_path), str(tmp_path)), nprocs=2, start_method="fork")
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    for drop_last, (rows_per_rank, batch_size) in {False: (11, 3), True: (10, 3)}.items():
        (len0, b0), (len1, b1) = (r[drop_last] for r in results)
        assert len0 == len1 == len(b0) == len(b1)
        assert [len(b) for b in b0] == [len(b) for b in b1]
        assert sum(map(len, b0)) == rows_per_rank - (rows_per_rank % batch_size if drop_last else 0)
        assert not set(sum(b0, [])) & set(sum(b1, []))  # shards split by rank; padding repeats a rank's own samples
    assert all("too few for 2 rank(s)" in r["error"] for r in results)
