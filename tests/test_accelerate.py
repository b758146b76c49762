"""Accelerate trains on exactly the loader's own stream: through `prepare`, after a resume that skips the
batches already trained, with gradient accumulation's last window stepped at the end of the data, and
with per-rank checkpoints under torchrun with two processes."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

accelerate = pytest.importorskip("accelerate")

from curatedloader import CuratedLoader, TopK  # noqa: E402
from curatedloader.integrations.accelerate import end_of_data_aware  # noqa: E402

N, B, SUPER = 50, 4, 8


def make_loader(**kw) -> CuratedLoader:
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(N, 2, generator=g), torch.randint(0, 3, (N,), generator=g), torch.arange(N))
    return CuratedLoader(ds, batch_size=B, super_batch_size=SUPER, shuffle=True, seed=5,
                         scorer=lambda batch: batch[0][:, 0], selector=TopK(), **kw)


def ids(batches) -> list:
    return [batch[2].tolist() for batch in batches]


@pytest.fixture
def accelerator():
    from accelerate.state import AcceleratorState, GradientState

    yield accelerate.Accelerator(cpu=True)
    AcceleratorState._reset_state(True)  # Accelerate's singletons: the next test configures its own
    GradientState._reset_state()


def test_prepare_passes_the_loader_through_and_it_trains_the_own_stream(accelerator):
    model = nn.Linear(2, 3)
    loader = make_loader()
    model, optimizer, prepared = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1), loader)
    assert prepared is loader
    reference = make_loader()
    expected = [ids(reference), ids(reference)]
    trained = [ids(prepared), ids(prepared)]
    assert trained == expected and expected[0] != expected[1]


def test_skip_first_batches_resumes_a_step_counting_script(accelerator):
    reference = make_loader()
    epochs = [ids(reference), ids(reference)]
    resumed = make_loader()
    assert ids(resumed.skip_first_batches(3)) == epochs[0][3:]
    assert ids(resumed) == epochs[1]  # the next epoch is whole
    with pytest.raises(TypeError, match="skip_first_batches"):  # Accelerate's own rebuilds a plain DataLoader
        next(iter(accelerator.skip_first_batches(make_loader(), 3)))


def test_skip_first_batches_refuses_an_order_it_cannot_draw_again():
    loader = CuratedLoader(TensorDataset(torch.arange(10.0)), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match="seed"):
        loader.skip_first_batches(1)
    with pytest.raises(ValueError, match="num_batches"):
        make_loader().skip_first_batches(-1)


def test_accumulation_steps_the_last_incomplete_window_at_the_end_of_data():
    from accelerate.state import AcceleratorState, GradientState

    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=4)
    try:
        model = nn.Linear(2, 3)
        loader = make_loader()
        model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
        synced = []
        for _ in range(2):
            for batch in end_of_data_aware(loader):
                with accelerator.accumulate(model):
                    loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad()
                    synced.append(accelerator.sync_gradients)
        # 7 batches an epoch (6 super-batches, then 2 rows -> 1): windows of 4, then the last 3 at the data's end
        assert len(loader) == 7
        assert synced == [False, False, False, True, False, False, True] * 2
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


TORCHRUN_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    sys.path[:0] = [sys.argv[1]]
    import accelerate
    from test_accelerate import make_loader, ids
    out, stop = sys.argv[2], int(sys.argv[3])
    full = make_loader(gather_state=True)  # built before the Accelerator: the process group comes later
    loader = make_loader(gather_state=True)
    accelerator = accelerate.Accelerator(cpu=True)
    model = torch.nn.Linear(2, 3)
    model, loader = accelerator.prepare(model, loader)
    accelerator.register_for_checkpointing(loader)
    it = iter(loader)
    head = [next(it)[2].tolist() for _ in range(stop)]
    accelerator.save_state(f"{out}/ckpt")  # rank 0 writes the one custom checkpoint
    accelerator.wait_for_everyone()  # save_state returns before rank 0 has written it
    next(it), next(it)  # run on past the checkpoint, then resume from it
    accelerator.load_state(f"{out}/ckpt")
    result = {"full": ids(full) + ids(full), "resumed": head + [b[2].tolist() for b in it] + ids(loader)}
    with open(f"{out}/rank{accelerator.process_index}.json", "w") as f:
        json.dump(result, f)
""")


@pytest.mark.distributed
def test_torchrun_two_ranks_resume_each_their_own_stream_from_one_checkpoint(tmp_path):
    import pathlib

    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_SCRIPT)
    tests = str(pathlib.Path(__file__).parent)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), tests, str(tmp_path), "2"]
    done = subprocess.run(cmd, timeout=180, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    per_epoch = len(ranks[0]["full"]) // 2
    first = [set(i for batch in r["full"][:per_epoch] for i in batch) for r in ranks]
    assert not first[0] & first[1]  # disjoint shares of the epoch
    for r in ranks:
        assert r["resumed"] == r["full"]
