"""Encoding across two gloo ranks on CPU: each rank its own resumable part, merged by rank 0 in id order."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curatedloader.pruning import Features, encode

pytestmark = pytest.mark.distributed


class Pixels(torch.utils.data.Dataset):
    def __init__(self, n=11):
        self.x = torch.randn(n, 3, 2, 2, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


class Counting:
    """Flattens a batch and counts the rows it encoded; interrupts on call number `fail_at`."""

    def __init__(self, fail_at=None):
        self.rows, self.calls, self.fail_at = 0, 0, fail_at

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.rows += len(batch)
        return batch.flatten(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank, world, port, out, fail_at, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    encoder = Counting(fail_at)
    try:
        feats = encode(Pixels(), encoder, batch_size=2, out=out, progress=False)
        results[rank] = (encoder.rows, feats.ids.tolist())
    except KeyboardInterrupt:
        results[rank] = (encoder.rows, "interrupted")
    finally:
        dist.destroy_process_group()


def run(out, fail_at=None):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(run_rank, args=(2, free_port(), str(out), fail_at, results), nprocs=2)
        return [results[r] for r in range(2)]


def test_two_ranks_encode_their_shares_resume_and_merge_in_id_order(tmp_path):
    out = tmp_path / "out"
    assert run(out, fail_at=3) == [(4, "interrupted"), (4, "interrupted")]  # 2 batches of 2 each, of 5 and 6 rows
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["part-00000-of-00002", "part-00001-of-00002"]
    resumed = run(out)
    assert [rows for rows, _ in resumed] == [1, 2]  # each rank encodes only what its part lacks
    assert resumed[0][1] == resumed[1][1] == list(range(11))
    merged = Features.load(out)
    np.testing.assert_array_equal(merged.array, Pixels().x.flatten(1).numpy())
    assert not any(p.is_dir() for p in out.iterdir())  # parts merged, then removed
    assert [rows for rows, _ in run(out)] == [0, 0]  # merged and unchanged: nothing encoded
