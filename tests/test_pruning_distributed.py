"""Encoding across two gloo ranks on CPU: each rank its own resumable part, merged by rank 0 in id order."""
import os
import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from curatedloader.pruning import Features, encode
from test_pruning_encode import Flaky, Pixels

pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank, world, port, out, fail_at, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    encoder = Flaky(fail_at)
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
    assert run(out, fail_at=3) == [(4, "interrupted"), (4, "interrupted")]  # 2 batches of 2 each, of 5 rows
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["part-00000-of-00002", "part-00001-of-00002"]
    resumed = run(out)
    assert [rows for rows, _ in resumed] == [1, 1]  # each rank encodes only what its part lacks
    assert resumed[0][1] == resumed[1][1] == list(range(10))
    merged = Features.load(out)
    np.testing.assert_array_equal(merged.array, Pixels().x.flatten(1).numpy())
    assert not any(p.is_dir() for p in out.iterdir())  # parts merged, then removed
    assert [rows for rows, _ in run(out)] == [0, 0]  # merged and unchanged: nothing encoded
